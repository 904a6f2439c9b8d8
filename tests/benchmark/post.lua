-- wrk script: POST a unique 10 KB edXML document per request (fresh DocumentId and Idempotency-Key).
-- Environment: BENCH_TEMPLATE (file with the marker __SEQ__), BENCH_KEY (API key), BENCH_PATH (default /v1/messages).
-- Fixed-rate runs: BENCH_RATE requests per second in all, spread over BENCH_THREADS threads (wrk's -t).
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clock_id, bench_timespec *tp);
]]
local CLOCK_MONOTONIC = 1
local template = assert(io.open(os.getenv("BENCH_TEMPLATE"), "rb")):read("*a")
-- Split once around the marker: joining three strings per request is far cheaper than searching 10 KB.
local marker = assert(string.find(template, "__SEQ__", 1, true), "the template has no __SEQ__ marker")
local head, tail = string.sub(template, 1, marker - 1), string.sub(template, marker + 7)
local key = os.getenv("BENCH_KEY") or ""
local path = os.getenv("BENCH_PATH") or "/v1/messages"
local rate = tonumber(os.getenv("BENCH_RATE") or "0")
local thread_count = tonumber(os.getenv("BENCH_THREADS") or "1")
local threads = {}
local next_id = 1

function setup(thread)
  thread:set("tid", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

local clock = ffi.new("bench_timespec")

local function now_ms()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, clock)
  return tonumber(clock.tv_sec) * 1000 + tonumber(clock.tv_nsec) / 1e6
end

function init(args)
  counter = 0
  run = tostring(os.time())
  -- Each thread sends on its own schedule, one request every interval_ms, whatever the answers' latency: the
  -- rate offered does not fall when the server slows down (a closed loop's would), up to the connections' limit.
  interval_ms = rate > 0 and thread_count * 1000 / rate or 0
  next_slot = nil
end

function request()
  counter = counter + 1
  local seq = string.format("%s%02d%09d", run, tid, counter)
  local body = head .. seq .. tail
  return wrk.format("POST", path, {
    ["Content-Type"] = "application/xml",
    ["Authorization"] = "Bearer " .. key,
    ["Idempotency-Key"] = "bench-" .. seq,
  }, body)
end

function delay()
  if interval_ms == 0 then
    return 0
  end
  local now = now_ms()
  next_slot = next_slot or now
  -- A slot missed while every connection was busy is made up as soon as one is free, not dropped.
  local wait = next_slot - now
  next_slot = next_slot + interval_ms
  return wait > 0 and math.floor(wait) or 0
end

-- No response() callback: with one, wrk hands every response's headers and body to Lua, which costs the load
-- generator more CPU than the no-op server spends answering. Refusals are counted by wrk itself (non-2xx).

function done(summary, latency, requests)
  local e = summary.errors
  local failed = e.status + e.connect + e.read + e.write + e.timeout
  io.write(string.format("BENCH requests=%d failed=%d seconds=%.3f p50_us=%d p99_us=%d p90_us=%d p999_us=%d max_us=%d\n",
    summary.requests, failed, summary.duration / 1e6, latency:percentile(50), latency:percentile(99),
    latency:percentile(90), latency:percentile(99.9), latency.max))
end
