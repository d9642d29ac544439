-- wrk script: every request different (tests/bench/http.py wrote them, one a line, to a file).
-- Template: http.py replaces the DATA line with USERS, REQUESTS_FILE and PACED. Arguments after
-- "--": the first line to send (so that successive runs never repeat a request), a random seed
-- and, when PACED, the mean think time in milliseconds.
-- No response() here: wrk then skips buffering bodies, and errors.status counts failures.

--@@DATA@@

local threads = {}
local lines = {}
local next_line = 1
local think_ms = 0

function setup(thread)
  table.insert(threads, thread)
end

if PACED then
  -- A fixed offered rate rather than closed-loop: each connection waits an exponential think
  -- time (mean think_ms) before each request, so N connections offer N * 1000 / (think_ms +
  -- latency) req/s, about N * 1000 / think_ms while answers are much faster than the think
  -- time. wrk starts timing a request after its wait.
  function delay()
    return math.floor(-think_ms * math.log(1 - math.random()) + 0.5)
  end
end

function init(args)
  math.randomseed(tonumber(args[2]) or 1)
  think_ms = tonumber(args[3]) or 0
  for line in io.lines(REQUESTS_FILE) do
    local tab = string.find(line, "\t", 1, true)
    table.insert(lines, { tonumber(string.sub(line, 1, tab - 1)), string.sub(line, tab + 1) })
  end
  next_line = ((tonumber(args[1]) or 0) % #lines) + 1
end

function request()
  local q = lines[next_line]
  next_line = next_line + 1
  if next_line > #lines then
    next_line = 1
  end
  return wrk.format("GET", q[2], USERS[q[1]])
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests":%d,"duration_us":%d,"bytes":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,'
      .. '"max_us":%d,"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},'
      .. '"statuses":{},"unmatched":0}\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    e.connect, e.read, e.write, e.status, e.timeout))
end
