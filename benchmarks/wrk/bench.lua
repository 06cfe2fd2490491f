-- wrk script shared by every HTTP case, so the load generator does the same
-- work per request whatever the server does.
--
--   wrk ... -s bench.lua URL -- METHOD PATH NONCE [QUOTA]
--
-- Each request carries a distinct buyer, "X-User: <NONCE>-<thread>-<n>", so
-- the per-user limit never refuses (a fresh NONCE per run keeps runs apart).
-- QUOTA > 0: each thread sends exactly QUOTA such requests (a fixed crowd,
-- e.g. 20,000 buyers arriving at once), then keeps its connections busy with
-- "GET /bare" fillers (answered 200, not counted as buyers) until it has all
-- QUOTA answers, prints "WRK-QUOTA-DONE" and stops. done() prints one JSON line, prefixed
-- "WRK-JSON ", with counts per outcome ("202", "409:sold_out": the status,
-- plus the problem+json code for errors) and latency percentiles (us).

local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

function init(args)
  method = args[1] or "GET"
  path = args[2] or "/"
  nonce = args[3] or "x"
  quota = tonumber(args[4] or "0")
  n = 0
  -- wrk calls request() once on the first thread's state to check the script
  -- (script_verify_request); that request is never sent, so skip its number.
  if tid == 1 then n = -1 end
  seen = 0
  statuses = {}
  prefix = nonce .. "-" .. tid .. "-"
  body = nil
  if method == "POST" then body = "" end
end

function request()
  if quota > 0 and n >= quota then
    return wrk.format("GET", "/bare", nil, nil)
  end
  n = n + 1
  return wrk.format(method, path, {["X-User"] = prefix .. n}, body)
end

function response(status, headers, body)
  local key = tostring(status)
  if status >= 400 then
    key = key .. ":" .. (string.match(body, '"code":"([%w_]+)"') or "?")
  end
  statuses[key] = (statuses[key] or 0) + 1
  if quota > 0 and status ~= 200 then
    seen = seen + 1
    if seen == quota then
      -- wrk's main thread sleeps for the whole -d duration; the runner
      -- interrupts it (SIGINT) once every thread has printed this line.
      io.write("WRK-QUOTA-DONE\n")
      io.flush()
      wrk.thread:stop()
    end
  end
end

function done(summary, latency, requests)
  local totals = {}
  for _, thread in ipairs(threads) do
    local st = thread:get("statuses")
    for code, count in pairs(st) do
      totals[code] = (totals[code] or 0) + count
    end
  end
  local parts = {}
  for code, count in pairs(totals) do
    table.insert(parts, string.format('"%s":%d', code, count))
  end
  local e = summary.errors
  io.write(string.format(
    'WRK-JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"statuses":{%s},"latency_us":{"mean":%.1f,"p50":%d,"p90":%d,"p99":%d,"p999":%d,"max":%d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    table.concat(parts, ","), latency.mean,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max))
end
