#!/usr/bin/env bash
# Load benchmark: regent's decision throughput, latency, CPU per request and memory, next to
# the same server's HTTP ceiling and to OPA's engine alone, all from one run on this machine.
# See bench/README.md. Usage: bench/load.sh [--quick] [--no-write]
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
BENCH_DIR=${BENCH_DIR:-$ROOT/../shared/bench}
OPA_BENCH=${OPA_BENCH:-$(dirname "$BENCH_DIR")/tools/opa-engine-bench}
CASES=${CASES:-"rbac httpapi k8s inventory_lookup"}
DURATION=${DURATION:-8}        # seconds measured per row
WARMUP=${WARMUP:-2}            # seconds of load before each measured row
CONNECTIONS=${CONNECTIONS:-64} # open connections for the throughput rows
PACED_CONNECTIONS=${PACED_CONNECTIONS:-256}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
OUT=${OUT:-$ROOT/docs/benchmarks.md}
WRITE=1
for arg in "$@"; do
  case $arg in
    --quick) DURATION=3 WARMUP=1 ;;
    --no-write) WRITE=0 ;;
    *) echo "usage: $0 [--quick] [--no-write]" >&2; exit 2 ;;
  esac
done

die() { echo "load.sh: $*" >&2; exit 1; }
[ -d "$BENCH_DIR" ] || die "no benchmark corpus at $BENCH_DIR (set BENCH_DIR)"
[ -x "$OPA_BENCH" ] || die "no opa-engine-bench at $OPA_BENCH (set OPA_BENCH)"
command -v python3 >/dev/null || die "python3 is needed for the report"
if ! command -v wrk >/dev/null; then
  [ "$(id -u)" = 0 ] || die "wrk is missing: apt-get install wrk"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
fi
[ "$(nproc)" -ge 2 ] || die "needs two CPUs: one for the server, one for wrk"

echo "== building the release binary" >&2
cargo build --release --quiet
BIN=$ROOT/target/release/regent

WORK=$(mktemp -d)
SERVER_PID=
cleanup() {
  if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

# OPA's engine alone, pinned to the server's core, before any server runs.
echo "== opa-engine-bench --pin $SERVER_CPU" >&2
case_dirs=()
for c in $CASES; do case_dirs+=("$BENCH_DIR/$c"); done
"$OPA_BENCH" --pin "$SERVER_CPU" --json --seconds 2 "${case_dirs[@]}" >"$WORK/opa.json"

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# start_server NAME FILES...: serves the files on a free port, pinned; sets SERVER_PID, URL.
start_server() {
  local name=$1
  shift
  local port
  port=$(free_port)
  # Request logs stay on (info, JSON) and go to a pipe, as under a container runtime; the
  # reader keeps the first 64 KiB for inspection and discards the rest on the load core.
  taskset -c "$SERVER_CPU" "$BIN" run --server --addr "127.0.0.1:$port" "$@" \
    2> >(taskset -c "$LOAD_CPU" sh -c "head -c 65536 >'$WORK/$name.log'; cat >/dev/null") &
  SERVER_PID=$!
  URL=http://127.0.0.1:$port
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  die "server for $name did not start; log: $(cat "$WORK/$name.log")"
}

stop_server() {
  kill "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=
}

# measure ROW URL SCRIPT ARGS...: warm-up, then a measured wrk run; appends one JSON line.
measure() {
  local row=$1 url=$2 script=$3 conns=$4
  shift 4
  taskset -c "$LOAD_CPU" wrk -t1 -c"$conns" -d"${WARMUP}s" -s "$script" "$url" -- "$@" >/dev/null
  local t0 t1
  t0=$(ticks "$SERVER_PID")
  taskset -c "$LOAD_CPU" wrk -t1 -c"$conns" -d"${DURATION}s" --timeout 5s -s "$script" "$url" -- "$@" \
    | tail -n1 >"$WORK/wrk.json"
  t1=$(ticks "$SERVER_PID")
  python3 - "$row" "$WORK/wrk.json" "$t0" "$t1" "$(getconf CLK_TCK)" "$(rss_kb "$SERVER_PID")" \
    "${IDLE_RSS:-0}" "${RATE:-0}" >>"$WORK/rows.jsonl" <<'PY'
import json, sys
row, path, t0, t1, hz, rss, idle, rate = sys.argv[1:]
w = json.load(open(path))
w.update(row=row, cpu_s=(int(t1) - int(t0)) / int(hz), rss_kb=int(rss), idle_rss_kb=int(idle),
         target_rate=float(rate))
print(json.dumps(w))
PY
}

# Request bodies, one per line, and a check that regent gives OPA's answers before timing.
prepare_case() {
  python3 - "$BENCH_DIR/$1" "$WORK/$1.bodies" "$WORK/$1.path" <<'PY'
import json, sys
d, bodies, path = sys.argv[1:]
inputs = json.load(open(f"{d}/inputs.json"))
with open(bodies, "w") as f:
    for i in inputs:
        f.write(json.dumps({"input": i}, separators=(",", ":")) + "\n")
open(path, "w").write(json.load(open(f"{d}/case.json"))["path"])
PY
}

check_answers() {
  python3 - "$BENCH_DIR/$1" "$2" <<'PY'
import json, sys, urllib.request
d, url = sys.argv[1:]
case = json.load(open(f"{d}/case.json"))
for i, (inp, want) in enumerate(zip(json.load(open(f"{d}/inputs.json")), case["expected"])):
    req = urllib.request.Request(f"{url}/v1/data/{case['path']}", json.dumps({"input": inp}).encode(),
                                 {"Content-Type": "application/json"})
    got = json.load(urllib.request.urlopen(req)).get("result")
    if got != want:
        sys.exit(f"{d}: input #{i}: regent answered {got!r}, OPA answers {want!r}")
PY
}

: >"$WORK/rows.jsonl"
CEILING_DONE=0
for c in $CASES; do
  prepare_case "$c"
  files=("$BENCH_DIR/$c/policy.rego")
  [ -f "$BENCH_DIR/$c/data.json" ] && files+=("$BENCH_DIR/$c/data.json")
  start_server "$c" "${files[@]}"
  sleep 1
  IDLE_RSS=$(rss_kb "$SERVER_PID")
  check_answers "$c" "$URL"
  if [ "$CEILING_DONE" = 0 ]; then
    # The ceiling: the same server answering its cheapest route, GET / (a static page).
    CEILING_DONE=1
    echo "== GET / (HTTP ceiling)" >&2
    RATE=0 measure "GET /" "$URL/" bench/decisions.lua "$CONNECTIONS"
  fi
  echo "== POST /v1/data/$(cat "$WORK/$c.path")" >&2
  RATE=0 measure "$c" "$URL/v1/data/$(cat "$WORK/$c.path")" bench/decisions.lua "$CONNECTIONS" \
    "$WORK/$c.bodies"
  if [ "$c" = rbac ]; then
    RATE=$(python3 -c "import json,sys
rows=[json.loads(l) for l in open(sys.argv[1])]
r=[x for x in rows if x['row']=='rbac'][0]
print(round(0.8*r['requests']/(r['duration_us']/1e6)))" "$WORK/rows.jsonl")
    echo "== rbac at a constant $RATE req/s (80% of its maximum)" >&2
    RATE=$RATE measure "rbac @80%" "$URL/v1/data/$(cat "$WORK/$c.path")" bench/paced.lua \
      "$PACED_CONNECTIONS" "$WORK/$c.bodies" "$RATE"
  fi
  stop_server
done

LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

python3 - "$WORK/rows.jsonl" "$WORK/opa.json" "$OUT" "$WRITE" "$LOAD_BEFORE" "$LOAD_AFTER" \
  "$DURATION" "$CONNECTIONS" "$PACED_CONNECTIONS" <<'PY'
import datetime, json, os, platform, re, subprocess, sys
rows_path, opa_path, out, write, load_before, load_after, duration, conns, paced = sys.argv[1:]
rows = [json.loads(l) for l in open(rows_path)]
opa = {r["case"]: r for r in json.load(open(opa_path))["results"]}

def rate(r):
    return r["requests"] / (r["duration_us"] / 1e6)

ceiling = next(r for r in rows if r["row"] == "GET /")
targets = {"rbac": 2.75, "httpapi": 3.0, "k8s": 3.0}

def ms(us):
    return f"{us / 1000:.2f}"

def mb(kb):
    return f"{kb / 1024:.1f}"

lines = [
    "| row | req/s | server CPU µs/req | per core/s | × ceiling | OPA engine evals/s per core | × OPA | target | p50 ms | p99 ms | RSS idle MB | RSS loaded MB | errors |",
    "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|",
]

def per_core(r):
    # Decisions one fully used core can serve: the server's own CPU time per request, so a
    # server that got less than its whole core (a busy machine) is not under-counted. It is the
    # figure OPA's engine is reported in (evals/s per core = 1e6 / CPU µs per eval).
    return 1e6 * r["requests"] / (r["cpu_s"] * 1e6) if r["cpu_s"] > 0 else 0.0

ceil_core = per_core(ceiling)
verdicts = []
for r in rows:
    q = rate(r)
    cpu_us = r["cpu_s"] * 1e6 / max(r["requests"], 1)
    core = per_core(r)
    errors = sum(r["errors"].values())
    case = r["row"].split(" ")[0]
    o = opa.get(case) if r["row"] == case else None
    opa_rate = f"{o['evals_per_sec_per_core']:,}" if o else ""
    x_opa = f"{core / o['evals_per_sec_per_core']:.2f}" if o else ""
    target = ""
    if o and case in targets:
        ok = core / o["evals_per_sec_per_core"] >= targets[case]
        target = f"≥ {targets[case]}× {'met' if ok else 'MISSED'}"
        verdicts.append(ok)
    if r["row"] == "rbac @80%":
        ok = r["p99_us"] < 1000
        target = f"p99 < 1 ms {'met' if ok else 'MISSED'} (offered {r['target_rate']:,.0f}/s)"
        verdicts.append(ok)
    idle = mb(r["idle_rss_kb"]) if r["idle_rss_kb"] else ""
    lines.append(
        f"| {r['row']} | {q:,.0f} | {cpu_us:.1f} | {core:,.0f} | {core / ceil_core:.2f} | {opa_rate} | {x_opa} | {target} | "
        f"{ms(r['p50_us'])} | {ms(r['p99_us'])} | {idle} | {mb(r['rss_kb'])} | {errors} |")
idle_rbac = next((r["idle_rss_kb"] for r in rows if r["row"] == "rbac"), 0)
if idle_rbac:
    verdicts.append(idle_rbac < 15 * 1024)

floor = [f"{c} {o['us_per_eval_median']:.1f} µs (floor {o['floor']['us_per_eval_median']:.1f} µs)"
         for c, o in opa.items()]
try:
    cpu = re.search(r"model name\s*:\s*(.*)", open("/proc/cpuinfo").read()).group(1)
except Exception:
    cpu = platform.processor() or "unknown CPU"
try:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
except Exception:
    commit = "?"
now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
block = "\n".join([
    f"Run of {now}, regent {commit}, `bench/load.sh`: {os.cpu_count()} × {cpu}; server pinned to CPU 0, "
    f"wrk (1 thread, {conns} connections, {duration} s per row after a warm-up) pinned to CPU 1; "
    f"load average before {load_before}, after {load_after}. OPA engine: opa-engine-bench --pin 0, "
    f"µs per decision: {', '.join(floor)}.",
    "",
    *lines,
    "",
    f"Targets: {sum(verdicts)} of {len(verdicts)} met (idle RSS < 15 MB counted once, on the rbac server). "
    f"The `rbac @80%` row offers a constant rate over {paced} connections (bench/paced.lua).",
])
print(block)
if write == "1":
    begin, end = "<!-- load.sh:begin -->", "<!-- load.sh:end -->"
    text = open(out).read() if os.path.exists(out) else "# Benchmarks\n\n" + begin + "\n" + end + "\n"
    if begin not in text:
        text += "\n" + begin + "\n" + end + "\n"
    pre, rest = text.split(begin, 1)
    post = rest.split(end, 1)[1]
    open(out, "w").write(pre + begin + "\n" + block + "\n" + end + post)
    print(f"\nwritten to {out}", file=sys.stderr)
PY
