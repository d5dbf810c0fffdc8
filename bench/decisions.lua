-- wrk script for bench/load.sh: sends pre-formatted requests round-robin and prints one JSON
-- line of results.
--
--   wrk ... -s bench/decisions.lua <url> -- [BODIES [RATE]]
--
-- BODIES: a file with one request body per line; each becomes a POST to the URL's path with
-- Content-Type: application/json, formatted once in init() and then cycled through. Without
-- BODIES every request is a plain GET of the URL.
--
-- RATE is only read by bench/paced.lua, which adds a constant-rate schedule to this script.

local requests = {}
local count = 0
local index = 0
interval = nil -- ms between requests, set from RATE; used by paced.lua

function init(args)
  local bodies, rate = args[1], tonumber(args[2])
  if bodies and bodies ~= "" then
    for body in io.lines(bodies) do
      if body ~= "" then
        count = count + 1
        requests[count] = wrk.format("POST", nil, { ["Content-Type"] = "application/json" }, body)
      end
    end
  end
  if count == 0 then
    count = 1
    requests[1] = wrk.format("GET")
  end
  if rate and rate > 0 then
    interval = 1000 / rate
  end
end

function request()
  index = index % count + 1
  return requests[index]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"bytes":%d,"p50_us":%d,"p99_us":%d,"max_us":%d,'
      .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}}\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(99), latency.max,
    e.connect, e.read, e.write, e.status, e.timeout))
end
