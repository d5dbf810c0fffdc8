#!/usr/bin/env bash
# Where a decision's server time goes: runs the release binary under callgrind (perf's hardware
# counters are not available on every VM; callgrind counts instructions anywhere) serving one
# benchmark case, sends it REQUESTS decisions with wrk, and prints instructions per request for
# the main stages. Usage: bench/profile.sh [CASE] [REQUESTS]   (default: rbac 3000)
# Set GET=1 to profile GET / (the HTTP ceiling) on the same server instead.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
BENCH_DIR=${BENCH_DIR:-$ROOT/../shared/bench}
CASE=${1:-rbac}
REQUESTS=${2:-3000}
command -v valgrind >/dev/null || { echo "profile.sh: needs valgrind (apt-get install valgrind)" >&2; exit 1; }
command -v wrk >/dev/null || { echo "profile.sh: needs wrk (apt-get install wrk)" >&2; exit 1; }

cargo build --release --quiet
WORK=$(mktemp -d)
PID=
cleanup() {
  if [ -n "$PID" ]; then kill "$PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

dir=$BENCH_DIR/$CASE
files=("$dir/policy.rego")
[ -f "$dir/data.json" ] && files+=("$dir/data.json")
python3 - "$dir" "$WORK/bodies" "$WORK/path" <<'PY'
import json, sys
d, bodies, path = sys.argv[1:]
with open(bodies, "w") as f:
    for i in json.load(open(f"{d}/inputs.json")):
        f.write(json.dumps({"input": i}, separators=(",", ":")) + "\n")
open(path, "w").write(json.load(open(f"{d}/case.json"))["path"])
PY
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
OUT=$WORK/callgrind.out
taskset -c 0 valgrind --tool=callgrind --callgrind-out-file="$OUT" \
  "$ROOT/target/release/regent" run --server --addr "127.0.0.1:$port" "${files[@]}" \
  2>"$WORK/server.log" &
PID=$!
for _ in $(seq 600); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
  sleep 0.1
done
if [ "${GET:-0}" = 1 ]; then
  url=http://127.0.0.1:$port/
  args=()
else
  url=http://127.0.0.1:$port/v1/data/$(cat "$WORK/path")
  args=("$WORK/bodies")
fi
# Startup (parsing, data loading) is excluded: counting starts after a first request.
curl -s -o /dev/null "$url" -d '{}' || true
callgrind_control --zero "$PID" >/dev/null 2>&1
sent=0
while [ "$sent" -lt "$REQUESTS" ]; do
  n=$(taskset -c 1 wrk -t1 -c2 -d2s -s bench/decisions.lua "$url" -- "${args[@]}" | tail -n1 |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["requests"])')
  sent=$((sent + n))
done
kill -INT "$PID"
wait "$PID" 2>/dev/null || true
PID=
dump=$OUT
echo "$CASE: $sent requests profiled (${GET:+GET / }$dump)"
callgrind_annotate --inclusive=yes "$dump" 2>/dev/null | python3 -c '
import re, sys
n = int(sys.argv[1])
stages = [
    ("total (all threads)", r"PROGRAM TOTALS"),
    ("request handling (hyper connection task)", r"axum::serve::handle_connection::\{\{closure\}\}::\{\{closure\}\} \["),
    ("  request log middleware (both lines)", r"log_requests::\{\{closure\}\}::\{\{closure\}\} \["),
    ("  POST /v1/data handler", r"regent::server::data::post_v1::\{\{closure\}\} \["),
    ("    read body", r"regent::server::body::read::\{\{closure\}\} \["),
    ("    parse input into regorus Value", r"regent::server::data::decode \["),
    ("    evaluate (plan lookup + fast tier)", r"regent::engine::eval::eval_path \["),
    ("      RVM execute", r"RegoVM>::execute \["),
    ("    write response", r"regent::server::reply::json \["),
    ("  GET / handler", r"regent::server::index::get::\{\{closure\}\} \["),
    ("log writer thread", r"regent::telemetry::logging::write_lines"),
]
seen = {}
for line in sys.stdin:
    m = re.match(r"\s*([\d,]+) \(\s*[\d.]+%\)\s+(.*)", line)
    if not m:
        continue
    ir, name = int(m.group(1).replace(",", "")), m.group(2)
    for label, pat in stages:
        if label not in seen and re.search(pat, name):
            seen[label] = ir
for label, _ in stages:
    if label in seen:
        print(f"{label:48} {seen[label] / n:>10,.0f} instructions/request")
' "$sent"
if [ -n "${KEEP:-}" ]; then cp "$dump" "$KEEP/callgrind.$CASE.out"; fi
