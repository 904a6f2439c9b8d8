-- wrk script: POST a unique 10 KB edXML document per request (fresh DocumentId and Idempotency-Key).
-- Environment: BENCH_TEMPLATE (file with the marker __SEQ__), BENCH_KEY (API key), BENCH_PATH (default /v1/messages).
local template = assert(io.open(os.getenv("BENCH_TEMPLATE"), "rb")):read("*a")
-- Split once around the marker: joining three strings per request is far cheaper than searching 10 KB.
local marker = assert(string.find(template, "__SEQ__", 1, true), "the template has no __SEQ__ marker")
local head, tail = string.sub(template, 1, marker - 1), string.sub(template, marker + 7)
local key = os.getenv("BENCH_KEY") or ""
local path = os.getenv("BENCH_PATH") or "/v1/messages"
-- Pacing for fixed-rate runs: each connection waits this long before its next request (0 = as fast as it can).
local pause_ms = tonumber(os.getenv("BENCH_DELAY_MS") or "0")
local threads = {}
local next_id = 1

function setup(thread)
  thread:set("tid", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

function init(args)
  counter = 0
  run = tostring(os.time())
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
  return pause_ms
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
