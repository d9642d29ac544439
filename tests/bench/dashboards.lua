-- wrk script: the polling mix as dashboards poll it, each connection its own dashboard.
-- Run with as many threads as connections (wrk -tN -cN): a thread's one connection has one
-- request in flight, so each response answers that thread's last request, and a 200's ETag is
-- recorded for exactly its query, however the answer changed. Each request picks one of the
-- queries at random; a share REVALIDATE of them carry the ETag of that query's last 200 seen
-- by this connection (none until it has seen one).
-- Template: tests/bench/live.py replaces the DATA line with the users, queries and share.

--@@DATA@@

local threads = {}
statuses = {}
unmatched = 0
local etags = {}
local last = nil

function setup(thread)
  table.insert(threads, thread)
  thread:set("index", #threads)
end

function init(args)
  math.randomseed((tonumber(args[1]) or 1) + 7919 * (index or 0))
end

function request()
  local i = math.random(#QUERIES)
  local q = QUERIES[i]
  local h = USERS[q[1]]
  last = i
  local e = etags[i]
  if e ~= nil and math.random() < REVALIDATE then
    local r = { ["X-User-Id"] = h["X-User-Id"], ["X-Auth-Token"] = h["X-Auth-Token"] }
    r["If-None-Match"] = e
    return wrk.format("GET", q[2], r)
  end
  return wrk.format("GET", q[2], h)
end

local function etag_of(headers)
  for k, v in pairs(headers) do
    if string.lower(k) == "etag" then
      return v
    end
  end
  return nil
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  if status == 200 and last ~= nil then
    local e = etag_of(headers)
    if e ~= nil then
      etags[last] = e
    else
      unmatched = unmatched + 1
    end
  end
end

function done(summary, latency, requests)
  local all = {}
  local um = 0
  for _, t in ipairs(threads) do
    for s, n in pairs(t:get("statuses")) do
      all[s] = (all[s] or 0) + n
    end
    um = um + t:get("unmatched")
  end
  local parts = {}
  for s, n in pairs(all) do
    table.insert(parts, string.format('"%d":%d', s, n))
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests":%d,"duration_us":%d,"bytes":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,'
      .. '"max_us":%d,"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},'
      .. '"statuses":{%s},"unmatched":%d}\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    e.connect, e.read, e.write, e.status, e.timeout, table.concat(parts, ","), um))
end
