#!/usr/bin/env bash
# What instrumentation costs: v1/data throughput with it on and off, side by side in one run, then
# the server CPU one /metrics scrape costs. COMPARE selects what is switched:
#   http      (default) `http_request_duration_seconds` observed or not
#             (`server.metrics.http_instrumentation=false`);
#   decisions decision metrics (`regent_decision*`) on or off
#             (`server.metrics.decisions.enabled=false`), HTTP metrics on in both arms.
#
# Two servers run at once, both pinned to CPU 0 (one tokio worker thread each, request
# log off so the measurement is not drowned in log formatting); wrk runs pinned to CPU 1 and loads
# one server at a time, alternating on/off/off/on so drift on a shared machine hits both arms.
#
# Usage: bench/metrics_overhead.sh [rounds] [seconds-per-run] [connections]
#   defaults: 6 rounds (one run per arm each), 5 s per run, 16 connections.
# Env: COMPARE (http), REGENT_BIN (default: target/release/regent, built if missing), SERVER_CPU (0),
#      CLIENT_CPU (1).
# Needs: wrk (Debian package `wrk`), curl, taskset. Only talks to 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${1:-6}
SECONDS_PER_RUN=${2:-5}
CONNECTIONS=${3:-16}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
BIN=${REGENT_BIN:-target/release/regent}
COMPARE=${COMPARE:-http}
case "$COMPARE" in
  http) OFF_SETTING=server.metrics.http_instrumentation=false ;;
  decisions) OFF_SETTING=server.metrics.decisions.enabled=false ;;
  *) echo "COMPARE must be http or decisions, not $COMPARE" >&2; exit 1 ;;
esac

for tool in wrk curl taskset; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install -y wrk curl util-linux)" >&2; exit 1; }
done
if [ -z "${REGENT_BIN:-}" ]; then
  cargo build --release --quiet
fi

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# start_server NAME EXTRA_ARGS... : starts regent on a free loopback port, prints its URL.
start_server() {
  local name=$1; shift
  TOKIO_WORKER_THREADS=1 taskset -c "$SERVER_CPU" "$BIN" run --server --addr 127.0.0.1:0 \
    --log-level error "$@" examples/rbac 2>"$work/$name.log" &
  pids+=("$!")
  echo "$!" >"$work/$name.pid"
}

# The bound address is only logged at info level; ask the kernel instead.
server_url() {
  local pid=$1 port=""
  for _ in $(seq 1 100); do
    port=$(ss -ltnpH 2>/dev/null | awk -v p="pid=$pid," '$0 ~ p {split($4, a, ":"); print a[length(a)]; exit}')
    [ -n "$port" ] && break
    sleep 0.1
  done
  [ -n "$port" ] || { echo "server $pid did not listen" >&2; exit 1; }
  echo "http://127.0.0.1:$port"
}

start_server on
start_server off --set "$OFF_SETTING"
echo "comparing $COMPARE instrumentation: off arm runs with --set $OFF_SETTING"
ON_PID=$(cat "$work/on.pid"); OFF_PID=$(cat "$work/off.pid")
ON=$(server_url "$ON_PID"); OFF=$(server_url "$OFF_PID")

cat >"$work/decide.lua" <<'EOF'
wrk.method = "POST"
wrk.path = "/v1/data/rbac/allow"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"input": {"user": "bob", "action": "update", "object": "finance"}}'
EOF
# What Prometheus sends: OpenMetrics preferred, gzip accepted.
cat >"$work/scrape.lua" <<'EOF'
wrk.path = "/metrics"
wrk.headers["Accept"] = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
wrk.headers["Accept-Encoding"] = "gzip"
EOF

for url in "$ON" "$OFF"; do
  answer=$(curl -sf "$url/v1/data/rbac/allow" -H 'Content-Type: application/json' \
    -d '{"input": {"user": "bob", "action": "update", "object": "finance"}}')
  [ "$answer" = '{"result":true}' ] || { echo "unexpected answer from $url: $answer" >&2; exit 1; }
done

# Server CPU time in nanoseconds: the sum of its threads' run time from schedstat (utime/stime
# ticks are 10 ms, too coarse for a few seconds of load). The server's threads live as long as it.
cpu_ns() { cat /proc/"$1"/task/*/schedstat | awk '{s += $1} END {printf "%.0f\n", s}'; }

# load PID URL SECONDS SCRIPT [CONNECTIONS] : prints "<requests> <requests/s> <server CPU ns>".
load() {
  local before after out
  before=$(cpu_ns "$1")
  out=$(taskset -c "$CLIENT_CPU" wrk -t1 -c"${5:-$CONNECTIONS}" -d"$3s" -s "$4" "$2")
  after=$(cpu_ns "$1")
  awk -v cpu="$((after - before))" '
    /requests in/ {n = $1}
    /^Requests\/sec:/ {rps = $2}
    END {print n, rps, cpu}' <<<"$out"
}

echo "warming up both servers..."
load "$ON_PID" "$ON" 2 "$work/decide.lua" >/dev/null
load "$OFF_PID" "$OFF" 2 "$work/decide.lua" >/dev/null

# Throughput is what the issue asks for; on a shared machine it swings with the neighbours'
# load, so the server CPU each request cost (less sensitive to that) is printed beside it.
printf '%-6s %12s %12s %16s %16s\n' round "on req/s" "off req/s" "on CPU µs/req" "off CPU µs/req"
results=()
for round in $(seq 1 "$ROUNDS"); do
  if (( round % 2 )); then order=(on off); else order=(off on); fi
  for arm in "${order[@]}"; do
    if [ "$arm" = on ]; then
      read -r on_n on_rps on_cpu < <(load "$ON_PID" "$ON" "$SECONDS_PER_RUN" "$work/decide.lua")
    else
      read -r off_n off_rps off_cpu < <(load "$OFF_PID" "$OFF" "$SECONDS_PER_RUN" "$work/decide.lua")
    fi
  done
  row=$(awk -v t=1e9 -v a="$on_n" -v b="$on_rps" -v c="$on_cpu" -v d="$off_n" -v e="$off_rps" -v f="$off_cpu" \
    'BEGIN {if (a < 1 || d < 1) {print b, e, "nan", "nan"} else {printf "%s %s %.2f %.2f", b, e, c / t * 1e6 / a, f / t * 1e6 / d}}')
  results+=("$row")
  read -r r1 r2 c1 c2 <<<"$row"
  printf '%-6s %12s %12s %16s %16s\n' "$round" "$r1" "$r2" "$c1" "$c2"
done

python3 - "${results[@]}" <<'EOF'
import statistics, sys
import math
rows = [[float(x) for x in arg.split()] for arg in sys.argv[1:]]
# A run starved by the machine's other load (almost no requests served) says nothing: drop its round.
kept = [r for r in rows if all(math.isfinite(x) and x > 0 for x in r) and min(r[0], r[1]) > 100]
if len(kept) < len(rows):
    print(f"(dropped {len(rows) - len(kept)} starved round(s))")
if not kept:
    sys.exit("no usable round")
on_rps, off_rps, on_cpu, off_cpu = (list(col) for col in zip(*kept))
med = statistics.median
print(f"{'median':<6} {med(on_rps):12.0f} {med(off_rps):12.0f} {med(on_cpu):16.2f} {med(off_cpu):16.2f}")
rps = med([a / b for a, b in zip(on_rps, off_rps)])
cpu = med([a / b for a, b in zip(on_cpu, off_cpu)])
print(f"throughput on/off, median of per-round ratios: {rps:.4f}  (cost {100 * (1 - rps):+.2f}%)")
print(f"CPU per request on/off, median of ratios:      {cpu:.4f}  (cost {100 * (cpu - 1):+.2f}%)")
EOF

# Scrape cost: server CPU spent answering /metrics, per scrape, with the default series plus the
# v1/data series the load above created; one connection, so scrapes do not overlap.
echo
echo "scrape cost on the instrumented server ($(curl -s "$ON/metrics" | grep -vc '^#') samples in text format):"
printf 'wrk.path = "/metrics"\n' >"$work/plain.lua"
for variant in "OpenMetrics + gzip (what Prometheus asks for):scrape.lua" "text 0.0.4, uncompressed:plain.lua"; do
  read -r n _ cpu < <(load "$ON_PID" "$ON" "$SECONDS_PER_RUN" "$work/${variant##*:}" 1)
  awk -v l="${variant%%:*}" -v n="$n" -v c="$cpu" -v t=1e9 \
    'BEGIN {printf "  %s %d scrapes, server CPU %.2f s, %.3f ms per scrape\n", l, n, c / t, 1000 * c / t / n}'
done
