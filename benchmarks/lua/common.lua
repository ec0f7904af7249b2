-- Prepended to every benchmark script. Counts responses by status in each thread (numeric globals, which
-- thread:get can read back) and prints one machine-readable line, WRKJSON {...}, when the run is done.
local threads = {}
local status_names = {}
statuses_seen = ""

function setup(thread)
  table.insert(threads, thread)
  thread:set("thread_id", #threads)
end

function response(status, headers, body)
  local name = status_names[status]
  if name == nil then
    name = "status_" .. status
    status_names[status] = name
    statuses_seen = statuses_seen .. status .. " "
    _G[name] = 0
  end
  _G[name] = _G[name] + 1
  if on_response ~= nil then
    on_response(status, headers, body)
  end
end

function done(summary, latency, requests)
  local totals = {}
  for _, thread in ipairs(threads) do
    local seen = thread:get("statuses_seen") or ""
    for status in string.gmatch(seen, "%d+") do
      totals[status] = (totals[status] or 0) + (thread:get("status_" .. status) or 0)
    end
  end
  local parts = {}
  for status, count in pairs(totals) do
    table.insert(parts, string.format('"%s": %d', status, count))
  end
  local errors = summary.errors
  io.write(string.format(
    'WRKJSON {"duration_us": %d, "requests": %d, "bytes": %d, ' ..
    '"socket_errors": {"connect": %d, "read": %d, "write": %d, "timeout": %d}, "status_errors": %d, ' ..
    '"latency_us": {"min": %d, "mean": %.1f, "max": %d, "p50": %d, "p90": %d, "p99": %d, "p999": %d}, ' ..
    '"statuses": {%s}}\n',
    summary.duration, summary.requests, summary.bytes,
    errors.connect, errors.read, errors.write, errors.timeout, errors.status,
    latency.min, latency.mean, latency.max,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
    table.concat(parts, ", ")))
end
