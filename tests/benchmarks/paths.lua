-- wrk script: each thread sends the requests of its own share of a list, then stops (or, with
-- BENCH_CYCLE=1, starts over). wrk itself runs for its -d duration either way.
-- Environment: BENCH_PATHS (file of "METHOD PATH [BODY]" lines), BENCH_TOKEN, BENCH_THREADS.
local threads, counter = {}, 1

function setup(thread)
  thread:set("id", counter)
  table.insert(threads, thread)
  counter = counter + 1
end

function init(args)
  local n = tonumber(os.getenv("BENCH_THREADS"))
  jobs, i = {}, 0
  local k = 0
  for line in io.lines(os.getenv("BENCH_PATHS")) do
    if k % n == id - 1 then table.insert(jobs, line) end
    k = k + 1
  end
  wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")
  wrk.headers["Content-Type"] = "application/json"
  statuses = {}
end

function request()
  i = i + 1
  if i > #jobs then
    if os.getenv("BENCH_CYCLE") == "1" then
      i = 1
    else
      wrk.thread:stop()
      i = #jobs
    end
  end
  local method, path, body = jobs[i]:match("^(%S+) (%S+) ?(.*)$")
  if body == "" then body = nil end
  return wrk.format(method, path, nil, body)
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local merged = {}
  for _, t in ipairs(threads) do
    local s = t:get("statuses")
    for code, n in pairs(s) do merged[code] = (merged[code] or 0) + n end
  end
  local parts = {}
  for code, n in pairs(merged) do table.insert(parts, code .. "=" .. n) end
  io.write(string.format("statuses: %s\n", table.concat(parts, " ")))
  io.write(string.format("latency_ms: p50=%.2f p99=%.2f\n", latency:percentile(50) / 1000,
                         latency:percentile(99) / 1000))
end
