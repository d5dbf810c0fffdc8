-- wrk script for bench/load.sh: bench/decisions.lua at a constant offered rate.
--
--   wrk -t1 -c<connections> ... -s bench/paced.lua <url> -- BODIES RATE
--
-- (run from the repository root: it loads bench/decisions.lua). RATE is requests per second
-- for the whole run; use one wrk thread. Each response claims the next slot of a fixed
-- schedule, one slot every 1/RATE s, and the connection waits with wrk's delay() until that
-- slot: the offered load is RATE whatever the latency, as long as enough connections are open
-- to cover the slots in flight (load.sh checks the achieved rate). wrk's timers have 1 ms
-- resolution, so the requests due within one millisecond leave together: arrivals come in
-- bursts of RATE/1000, a harsher pattern than independent clients at the same rate, and the
-- p99 includes the time to drain such a burst. Latency is measured from the actual send.

dofile("bench/decisions.lua")

local ffi = require("ffi")
ffi.cdef [[
  typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
  int clock_gettime(int clk_id, bench_timespec *tp);
]]
local ts = ffi.new("bench_timespec")
local CLOCK_MONOTONIC = 1

local function now_ms()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

local next_at = nil

function delay()
  if not interval then
    return 0
  end
  local now = now_ms()
  if not next_at or next_at < now - 100 then
    -- First request, or more than 100 ms behind (the server or wrk stalled): restart the
    -- schedule instead of sending a backlog all at once.
    next_at = now
  end
  next_at = next_at + interval
  local wait = next_at - now
  if wait < 1 then
    return 0
  end
  return math.floor(wait)
end

