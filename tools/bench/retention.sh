#!/usr/bin/env bash
# Disk usage of tokenwheeld's data directory under steady load, with retention on.
#
#   tools/bench/retention.sh [OUT_DIR]      (make bench-retention)
#
# tokenwheeld keeps each finished task for RETENTION_S seconds (--retention-seconds), then
# deletes it by point deletes (docs/FORMAT.md, "Retention: point deletes, no scans").
# tokenwheel-bench drives the callback workload (issue with a timeout, then succeed) open-loop at
# RATE issues/s for RUN_S seconds through the AWS gateway, while `tokenwheel events watch`
# consumes and acknowledges the outcome stream (events are trimmed once acknowledged), as a
# workflow engine would. Every SAMPLE_S seconds the data directory's size is recorded.
# With retention working the size rises for RETENTION_S, then stays within a band set by
# RocksDB's memtables, WAL files and compactions instead of growing with the tasks issued.
#
# Writes OUT_DIR/retention-disk.tsv (elapsed_s, data_bytes, live SST bytes), the bench's JSON
# (OUT_DIR/callback.json) and, when gnuplot is there, docs-ready OUT_DIR/retention-disk.png.
set -euo pipefail

out=${1:-build/retention}
bin=${BIN:-build/release/tools}
rate=${RATE:-2000}
run_s=${RUN_S:-900}
retention_s=${RETENTION_S:-120}
sample_s=${SAMPLE_S:-10}
for b in tokenwheel-bench tokenwheeld tokenwheel; do
  [ -x "$bin/$b" ] || { echo "retention: $bin/$b missing (make release)" >&2; exit 2; }
done
mkdir -p "$out"
work=$(mktemp -d "${TMPDIR:-/tmp}/tw-retention-XXXXXX")
bench_pid=""
watch_pid=""
cleanup() {
  [ -n "$watch_pid" ] && kill "$watch_pid" 2>/dev/null || true
  [ -n "$bench_pid" ] && kill "$bench_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

"$bin/tokenwheel-bench" --workload callback --systems tokenwheel-gateway --rate "$rate" \
  --seconds "$run_s" --work-dir "$work" --tokenwheeld "$bin/tokenwheeld" \
  --server-arg=--retention-seconds="$retention_s" --out "$out" > "$out/bench.stdout" 2> "$out/bench.stderr" &
bench_pid=$!

# The server's Cap'n Proto address, from its start line.
addr=""
for _ in $(seq 1 600); do
  log=$(ls "$work"/tw-bench-tokenwheel-*/tokenwheeld.log 2>/dev/null | head -1 || true)
  if [ -n "$log" ]; then
    addr=$(grep -o 'listening on [0-9.]*:[0-9]*' "$log" | head -1 | awk '{print $3}' || true)
  fi
  [ -n "$addr" ] && break
  kill -0 "$bench_pid" 2>/dev/null || { cat "$out/bench.stderr" >&2; exit 1; }
  sleep 0.1
done
[ -n "$addr" ] || { echo "retention: tokenwheeld did not start" >&2; exit 1; }
data=$(dirname "$log")/data
"$bin/tokenwheel" --server "$addr" events watch --consumer retention > /dev/null &
watch_pid=$!

tsv="$out/retention-disk.tsv"
printf 'elapsed_s\tdata_bytes\tsst_bytes\n' > "$tsv"
t0=$(date +%s)
# Files come and go while they are counted (flushes, compactions, WAL switches): a sample
# counts what it finds. The bench removes the directory when it ends.
while kill -0 "$bench_pid" 2>/dev/null && [ -d "$data" ]; do
  bytes=$( (du -sb "$data" 2>/dev/null || true) | cut -f1)
  sst=$( (find "$data" -name '*.sst' -printf '%s\n' 2>/dev/null || true) |
    awk '{s+=$1} END {print s+0}')
  printf '%s\t%s\t%s\n' "$(( $(date +%s) - t0 ))" "${bytes:-0}" "$sst" >> "$tsv"
  sleep "$sample_s"
done
wait "$bench_pid" || { echo "retention: tokenwheel-bench failed" >&2; cat "$out/bench.stderr" >&2; exit 1; }
bench_pid=""
tail -1 "$out/bench.stdout" > "$out/callback-summary.json"

if command -v gnuplot > /dev/null; then
  gnuplot <<GP
set terminal pngcairo size 900,420 font "DejaVu Sans,10"
set output "$out/retention-disk.png"
set title "tokenwheeld data directory under steady load (callback at $rate/s, retention ${retention_s} s)"
set xlabel "seconds"
set ylabel "MiB"
set key top left
set grid
set arrow from $retention_s, graph 0 to $retention_s, graph 1 nohead dashtype 2
plot "$tsv" using 1:(\$2/1048576) skip 1 with lines lw 2 title "data directory", \
     "$tsv" using 1:(\$3/1048576) skip 1 with lines lw 1 title "SST files"
GP
fi
echo "retention: $(wc -l < "$tsv") samples in $tsv"
