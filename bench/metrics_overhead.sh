#!/usr/bin/env bash
# What instrumentation costs: v1/data throughput with it on and off, side by side in one run, then
# the server CPU one /metrics scrape costs. COMPARE selects what is switched:
#   http      (default) `http_request_duration_seconds` observed or not
#             (`server.metrics.http_instrumentation=false`);
#   decisions decision metrics (`regent_decision*`) on or off
#             (`server.metrics.decisions.enabled=false`), HTTP metrics on in both arms.
#
# Two servers run at once, both pinned to CPU 0 (one single-threaded tokio runtime each, request
# log off so the measurement is not drowned in log formatting); wrk runs pinned to CPU 1 and loads
# one server at a time, alternating on/off/off/on so drift on a shared machine hits both arms.
#
# Usage: bench/metrics_overhead.sh [rounds] [seconds-per-run] [connections]
#   defaults: 6 rounds (12 runs per arm), 5 s per run, 16 connections.
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

# load URL SECONDS SCRIPT : prints requests/s.
load() {
  taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNECTIONS" -d"$2s" -s "$3" "$1" \
    | awk '/^Requests\/sec:/ {print $2}'
}

echo "warming up both servers..."
load "$ON" 2 "$work/decide.lua" >/dev/null
load "$OFF" 2 "$work/decide.lua" >/dev/null

printf '%-6s %14s %14s\n' round "on (req/s)" "off (req/s)"
on_all=(); off_all=()
for round in $(seq 1 "$ROUNDS"); do
  if (( round % 2 )); then order=(on off); else order=(off on); fi
  declare -A rps=()
  for arm in "${order[@]}"; do
    if [ "$arm" = on ]; then url=$ON; else url=$OFF; fi
    rps[$arm]=$(load "$url" "$SECONDS_PER_RUN" "$work/decide.lua")
  done
  on_all+=("${rps[on]}"); off_all+=("${rps[off]}")
  printf '%-6s %14s %14s\n' "$round" "${rps[on]}" "${rps[off]}"
  unset rps
done

summary() {
  python3 - "$@" <<'EOF'
import statistics, sys
n = len(sys.argv) // 2
on = [float(x) for x in sys.argv[1:1 + n]]
off = [float(x) for x in sys.argv[1 + n:]]
ratios = [a / b for a, b in zip(on, off)]
print(f"mean   {statistics.mean(on):14.0f} {statistics.mean(off):14.0f}")
print(f"median {statistics.median(on):14.0f} {statistics.median(off):14.0f}")
print(f"throughput on/off: mean ratio {statistics.mean(on) / statistics.mean(off):.4f}, "
      f"median of per-round ratios {statistics.median(ratios):.4f} "
      f"(cost {100 * (1 - statistics.median(ratios)):.2f}%)")
EOF
}
summary "${on_all[@]}" "${off_all[@]}"

# Scrape cost: server CPU (utime + stime from /proc) spent answering /metrics, per scrape, with
# the default series plus the v1/data series the load above created.
ticks=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
echo
echo "scrape cost on the instrumented server ($(curl -s "$ON/metrics" | grep -vc '^#') samples in text format):"
for variant in prometheus plain; do
  if [ "$variant" = prometheus ]; then script=$work/scrape.lua; else
    printf 'wrk.path = "/metrics"\n' >"$work/plain.lua"; script=$work/plain.lua; fi
  before=$(cpu_ticks "$ON_PID")
  out=$(taskset -c "$CLIENT_CPU" wrk -t1 -c1 -d"${SECONDS_PER_RUN}s" -s "$script" "$ON")
  after=$(cpu_ticks "$ON_PID")
  requests=$(awk '/requests in/ {print $1}' <<<"$out")
  python3 -c "
ticks, before, after, n = $ticks, $before, $after, $requests
cpu = (after - before) / ticks
label = {'prometheus': 'OpenMetrics + gzip (what Prometheus asks for)', 'plain': 'text 0.0.4, uncompressed'}['$variant']
print(f'  {label}: {n} scrapes, server CPU {cpu:.2f} s, {1000 * cpu / n:.3f} ms per scrape')
"
done
