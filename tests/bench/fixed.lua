-- wrk script: a fixed set of dashboard queries, picked at random, some revalidated.
-- Template: tests/bench/http.py replaces the DATA line with the users, queries, fingerprints,
-- the revalidation fraction and (for the pure-revalidation mix) ETags known in advance.
-- A 200's ETag is recorded for its query: wrk does not say which request a response answers,
-- so the query is recognized by a fingerprint of the body (first "_id" and "total").

--@@DATA@@

local threads = {}
statuses = {}
unmatched = 0
matched = 0
local etags = {}
local etag_any = nil

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  math.randomseed(tonumber(args[1]) or 1)
  for i, e in pairs(PRESET) do
    etags[i] = e
  end
end

function request()
  local i = math.random(#QUERIES)
  local q = QUERIES[i]
  local h = USERS[q[1]]
  if REVALIDATE > 0 and math.random() < REVALIDATE then
    local e = etags[i]
    if e == nil and matched == 0 then
      e = etag_any -- a server whose bodies carry no fingerprint (the ceiling)
    end
    if e ~= nil then
      local r = { ["X-User-Id"] = h["X-User-Id"], ["X-Auth-Token"] = h["X-Auth-Token"] }
      r["If-None-Match"] = e
      return wrk.format("GET", q[2], r)
    end
  end
  return wrk.format("GET", q[2], h)
end

local function etag_of(headers)
  local e = headers["ETag"] or headers["Etag"] or headers["etag"]
  if e == nil then
    for k, v in pairs(headers) do
      if string.lower(k) == "etag" then
        return v
      end
    end
  end
  return e
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  if status ~= 200 or REVALIDATE == 0 then
    return
  end
  local e = etag_of(headers)
  if e == nil then
    return
  end
  local id = string.match(string.sub(body, 1, 200), '"_id":"([^"]*)"') or ""
  local total = string.match(string.sub(body, -120), '"total":(%d+)') or ""
  local i = FINGERPRINTS[id .. "|" .. total]
  if i ~= nil then
    etags[i] = e
    matched = matched + 1
  else
    etag_any = e
    unmatched = unmatched + 1
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
