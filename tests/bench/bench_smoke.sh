#!/usr/bin/env bash
# tokenwheel-bench at a tiny size, every system: checks that the harness works (the JSON's shape,
# counts that agree with each other), not its speed. ctest's bench_smoke label.
#   bench_smoke.sh PATH/TO/tokenwheel-bench WORKLOAD
# Exit 77 (skipped) only when the bench says a peer's binary is missing.
set -uo pipefail
bench="$1"
workload="$2"
systems="tokenwheel,postgres,redis"

# The storm fires its timers under a small callback load (--load-rate), the load's figures beside.
extra=()
[ "$workload" = timeout-storm ] && extra=(--load-rate 200)
out="$("$bench" --workload "$workload" --systems "$systems" --seconds 0.5 --clients 4 \
  --tasks 400 --clock-s 1 "${extra[@]}")"
rc=$?
[ "$rc" -eq 77 ] && { echo "bench_smoke: a peer is missing, skipped"; exit 77; }
echo "$out"
[ "$rc" -eq 0 ] || { echo "bench_smoke: tokenwheel-bench exited $rc"; exit 1; }
last="$(tail -n 1 <<<"$out")"

# The checks every system must pass, as one jq expression over the system's object ($s) and
# the run ($r).
common='($s.transitions_per_s | type == "number") and ($s.transitions_per_s > 0)
  and ($s.p50_ms | type == "number") and ($s.p99_ms | type == "number")
  and ($s.p50_ms <= $s.p99_ms) and ($s.durability | type == "string")
  and ($s | has("error") | not)'
case "$workload" in
  callback)
    check='$s.counts.issued > 0 and $s.counts.issued == $s.counts.succeeded
      and $s.counts.refused == 0
      and $s.transitions == $s.counts.issued + $s.counts.succeeded
      and ($s.percentiles_ms | has("p99.99"))' ;;
  activity)
    check='$s.counts.issued > 0 and $s.counts.polled == $s.counts.issued
      and $s.counts.succeeded == $s.counts.issued and $s.counts.refused == 0
      and $s.counts.heartbeats == 2 * $s.counts.polled and $s.counts.heartbeats_refused == 0
      and $s.transitions == 3 * $s.counts.issued' ;;
  timeout-storm)
    check='$s.counts.timed_out == $r.tasks and $s.counts.issued == $r.tasks
      and $s.counts.early == 0 and $s.counts.live_after == 0
      and ($s.lateness_p99_ms | type == "number") and $s.lateness_p50_ms >= 0
      and $s.lateness.samples == $r.tasks
      and $s.load_rate == 200 and $s.load.counts.issued > 0
      and $s.load.counts.issued == $s.load.counts.succeeded and $s.load.counts.refused == 0' ;;
  heartbeats)
    check='$s.counts.succeeded > 0 and $s.counts.issued == $s.counts.succeeded
      and $s.counts.refused == 0 and $s.counts.heartbeats_refused == 0
      and $s.counts.heartbeats == 10 * $s.counts.succeeded
      and $s.counts.live_after == $r.tasks' ;;
  recovery)
    check='$s.counts.issued == $r.tasks and $s.counts.live_before == $r.tasks
      and $s.counts.live_after == $r.tasks and $s.ready_ms > 0' ;;
  *) echo "bench_smoke: unknown workload $workload"; exit 2 ;;
esac

failed=0
for sys in tokenwheel-capnp tokenwheel-gateway postgres redis; do
  if ! jq -e --arg sys "$sys" \
      ". as \$r | .systems[\$sys] as \$s | (\$s != null) and ($common) and ($check)" \
      >/dev/null <<<"$last"; then
    echo "bench_smoke: $workload on $sys: the figures or counts do not add up:"
    jq --arg sys "$sys" '.systems[$sys] | del(.steps, .timeline_per_s, .lateness)' <<<"$last"
    failed=1
  fi
done
[ "$failed" -eq 0 ] && echo "bench_smoke: $workload ok on every system"
exit "$failed"
