-- wrk script of bench/run: closed-loop counter increments, the request a
-- tandem node takes for `POST /v1/records/{entity}/{id}/ops {"op":"incr","by":1}`.
-- Each wrk thread picks ids `load:<n>` (n < BENCH_KEYS) from its own seeded
-- generator, so threads do not walk the same keys in lockstep. BENCH_AUTH,
-- when set, is sent as `Authorization: Bearer <key>` (TLS runs).
-- At the end one line `WRKJSON {...}` carries the totals and percentiles
-- (microseconds) for bench/run to parse.

local entity = os.getenv("BENCH_ENTITY") or "likes"
local keys = tonumber(os.getenv("BENCH_KEYS") or "10000")
local auth = os.getenv("BENCH_AUTH")
local body = '{"op":"incr","by":1}'
local headers = { ["Content-Type"] = "application/json" }
if auth and auth ~= "" then
  headers["Authorization"] = "Bearer " .. auth
end
local prefix = "/v1/records/" .. entity .. "/load:"

local threads = {}
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("seed", counter)
  table.insert(threads, thread)
end

function init(args)
  math.randomseed(seed or 1)
end

function request()
  return wrk.format("POST", prefix .. math.random(0, keys - 1) .. "/ops", headers, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,"errors_connect":%d,"errors_read":%d,' ..
    '"errors_write":%d,"errors_status":%d,"errors_timeout":%d,"p50_us":%d,"p90_us":%d,' ..
    '"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
