#!/usr/bin/env bash
# Turns tokenwheel-bench's results into PNG plots and Markdown tables (make bench-peers).
#   report.sh RESULTS_DIR PNG_DIR [MARKDOWN_FILE]
# RESULTS_DIR holds <workload>.json and the .dat series tokenwheel-bench --out wrote. The plots go
# to PNG_DIR; the tables replace what lies between the bench-peers markers of MARKDOWN_FILE.
set -euo pipefail
results="$1"
pngs="$2"
markdown="${3:-}"
mkdir -p "$pngs"
systems=(tokenwheel-capnp tokenwheel-gateway postgres redis)

# One gnuplot `plot` clause per system whose series file exists.
clauses() {  # $1 workload, $2 series, $3 using
  local sep="" out=""
  for s in "${systems[@]}"; do
    local f="$results/$1.$s.$2.dat"
    [ -s "$f" ] || continue
    out+="$sep'$f' using $3 with linespoints title '$s'"
    sep=", "
  done
  echo "$out"
}

plot() {  # $1 png, $2 title, $3 xlabel, $4 ylabel, $5 clauses, $6 extra settings
  [ -n "$5" ] || return 0
  gnuplot <<GP
set terminal pngcairo size 900,560 noenhanced
set output '$pngs/$1'
set title '$2'
set xlabel '$3'
set ylabel '$4'
set grid
set key top left
$6
plot $5
GP
  echo "report: $pngs/$1"
}

plot callback-latency.png "callback: issue + succeed, p99 latency against throughput (CO-corrected)" \
  "durable transitions/s" "p99 latency (ms)" "$(clauses callback steps 1:3)" "set logscale y"
plot callback-timeline.png "callback, closed-loop: throughput over time" "s" \
  "durable transitions/s" "$(clauses callback timeline 1:2)" ""
plot timeout-storm-lateness.png "timeout storm: lateness of each timeout after its deadline" \
  "lateness (ms)" "fraction of timeouts" "$(clauses timeout-storm lateness 1:2)" "set key bottom right"
plot timeout-storm-timeline.png "timeout storm: timeouts durable per second, from the first deadline" \
  "s" "timeouts/s" "$(clauses timeout-storm timeline 1:2)" ""

[ -n "$markdown" ] || exit 0

# The tables: one row per system and workload, from each <workload>.json found.
table="$(mktemp)"
{
  echo "| workload | system | transitions/s | p50 ms | p99 ms | other | durability |"
  echo "|---|---|---|---|---|---|---|"
  for json in "$results"/*.json; do
    jq -r '
      .workload as $w | (if .batch > 1 then " (batch \(.batch))" else "" end) as $b
      | (if .tasks and (.workload | test("storm|heartbeats|recovery")) then ", \(.tasks) tasks"
         else "" end) as $t
      | .systems | to_entries[] | .key as $sys | .value as $v
      | def r(x): if x == null then "-" elif x >= 100 then (x | round | tostring) else (x * 10 | round / 10 | tostring) end;
        if $v.error then "| \($w)\($b)\($t) | \($sys) | error: \($v.error) | | | | |"
        else "| \($w)\($b)\($t) | \($sys) | \(r($v.transitions_per_s)) | \(r($v.p50_ms)) | \(r($v.p99_ms)) | "
          + ([ (if $v.lateness_p99_ms != null then "lateness p50 \($v.lateness_p50_ms), p99 \($v.lateness_p99_ms), max \($v.lateness_max_ms) ms; storm \(r($v.storm_s)) s, deadlines spread over \(r($v.deadline_spread_s)) s" else empty end),
               (if $v.server_timer_lateness != null then "engine lateness p50 \($v.server_timer_lateness.p50_ms), p99 \($v.server_timer_lateness.p99_ms), max \($v.server_timer_lateness.max_ms) ms" else empty end),
               (if $v.ready_ms != null then "ready \($v.ready_ms) ms after kill -9" else empty end),
               (if $v.counts.heartbeats != null and $v.counts.heartbeats > 0 and $w == "heartbeats" then "\(r($v.counts.heartbeats / $v.elapsed_s)) heartbeats/s" else empty end)
             ] | join("; "))
          + " | \($v.durability) |"
        end' "$json"
  done
} >"$table"

if ! grep -q '<!-- bench-peers:begin -->' "$markdown"; then
  echo "report: $markdown has no bench-peers markers"; exit 1
fi
awk -v table="$table" '
  /<!-- bench-peers:begin -->/ { print; while ((getline line < table) > 0) print line; skip = 1; next }
  /<!-- bench-peers:end -->/ { skip = 0 }
  !skip { print }' "$markdown" >"$markdown.tmp"
mv "$markdown.tmp" "$markdown"
rm -f "$table"
echo "report: tables in $markdown"
