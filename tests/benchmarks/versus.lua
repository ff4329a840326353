-- wrk script for versus_mlflow.py: paths.lua (each thread sends its share of a list of
-- "METHOD PATH [BODY]" lines, once or, with BENCH_CYCLE=1, over and over) plus a measured window.
-- Each thread notes (monotonic clock, through LuaJIT's ffi) when it sent its first request and
-- when its last response came, and counts its 2xx responses; done() prints
--   window: ok=<2xx responses> seconds=<last response - first request, over all threads>
-- so a rate is 2xx / window whether or not a list ran out. When a thread's share of a list runs
-- out, it interrupts wrk (SIGINT to its own process: wrk then stops every thread and reports as at
-- the end of -d), so a finished list costs no idle time; requests still in flight then are not
-- counted. With BENCH_DRAIN=1 (one connection per thread) every request of the list is answered
-- first. Environment: as for paths.lua, and BENCH_IDLE, a harmless path sent (and not counted)
-- after the list is done, instead of paths.lua's repeat of the last line.
local here = debug.getinfo(1, "S").source:sub(2):match("^(.*/)") or "./"
dofile(here .. "paths.lua")

local ffi = require("ffi")
ffi.cdef [[
  typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
  int clock_gettime(int clock_id, bench_timespec *tp);
  int getpid(void);
  int kill(int pid, int sig);
]]
local CLOCK_MONOTONIC, SIGINT = 1, 2
local ts = ffi.new("bench_timespec")

local function now()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) / 1e9
end

local base_setup, base_init, base_request = setup, init, request
local base_response, base_done = response, done
local all_threads = {}

function setup(thread)
  base_setup(thread)
  table.insert(all_threads, thread)
end

function init(args)
  base_init(args)
  first, last, ok, finished = 0, 0, 0, false
  cycling = os.getenv("BENCH_CYCLE") == "1"
  draining = os.getenv("BENCH_DRAIN") == "1"
  -- wrk calls the first thread's request() once before the run, to check what it returns
  -- (script_verify_request); that call must not use up a line of the list.
  verifying = id == 1
end

-- The list is done: with BENCH_DRAIN=1 (one connection per thread, so nothing is in flight) this
-- thread stops and the last thread to finish interrupts wrk; otherwise the first one does.
local function finish()
  finished = true
  if draining then
    local marks = os.getenv("BENCH_PATHS") .. ".done."
    io.open(marks .. id, "w"):close()
    wrk.thread:stop()
    for k = 1, tonumber(os.getenv("BENCH_THREADS")) do
      local f = io.open(marks .. k, "r")
      if not f then return end
      f:close()
    end
  end
  ffi.C.kill(ffi.C.getpid(), SIGINT)
end

function request()
  if verifying then
    verifying = false
    return wrk.format("GET", os.getenv("BENCH_IDLE"))
  end
  if first == 0 then first = now() end
  if not cycling and i >= #jobs then
    if not finished then finish() end
    return wrk.format("GET", os.getenv("BENCH_IDLE"))  -- harmless; its answer is not counted
  end
  return base_request()
end

function response(status, headers, body)
  if finished then return end
  base_response(status, headers, body)
  last = now()
  if status >= 200 and status < 300 then ok = ok + 1 end
end

function done(summary, latency, requests)
  base_done(summary, latency, requests)
  local total, from, to, ran_out = 0, math.huge, 0, 0
  for _, t in ipairs(all_threads) do
    total = total + t:get("ok")
    local f, l = t:get("first"), t:get("last")
    if f > 0 and f < from then from = f end
    if l > to then to = l end
    if t:get("finished") then ran_out = 1 end
  end
  io.write(string.format("window: ok=%d seconds=%.4f ran_out=%d\n", total,
                         math.max(to - from, 0), ran_out))
end
