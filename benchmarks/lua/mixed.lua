-- Mixed traffic for the soak run, in a fixed cycle of 20 requests: 16 GET /users/me, 2 refreshes, 1 login and
-- 1 PATCH /users/me. Each refresh token is spent once: a refresh takes one from the pool, and the token its answer
-- brings goes back in (a login's answer tops the pool up when refreshes that were cut short left it low). What is
-- left at the end is written to POOL_OUT, for the next run to go on with.
-- wrk mixed.lua URL -- ACCESS_TOKEN TOKEN_FILE POOL_SIZE LOGIN_BODY POOL_OUT
local access_token, login_body, pool_size
local counter = 0
-- Globals: done() reads them back from the thread.
pool = {}
pool_out = ""

function init(args)
  access_token, pool_size, login_body, pool_out = args[1], tonumber(args[3]), args[4], args[5]
  for line in io.lines(args[2]) do
    if line ~= "" then
      table.insert(pool, line)
    end
  end
end

local json = {["Content-Type"] = "application/json"}

function request()
  counter = counter + 1
  local slot = counter % 20
  if slot == 0 then
    return wrk.format("POST", "/auth/login", json, login_body)
  elseif slot == 5 or slot == 15 then
    -- An empty pool (only after failed refreshes) sends a token that is refused, so the error is counted.
    local token = table.remove(pool) or "exhausted"
    return wrk.format("POST", "/auth/refresh", json, '{"refresh_token": "' .. token .. '"}')
  elseif slot == 10 then
    local headers = {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. access_token}
    return wrk.format("PATCH", "/users/me", headers, '{"full_name": "Soak Run ' .. counter % 1000 .. '"}')
  end
  return wrk.format("GET", "/users/me", {["Authorization"] = "Bearer " .. access_token})
end

function on_response(status, headers, body)
  local token = string.match(body, '"refresh_token"%s*:%s*"([^"]+)"')
  if token ~= nil and #pool < pool_size then
    table.insert(pool, token)
  end
end

local count_done = done

function done(summary, latency, requests)
  count_done(summary, latency, requests)
  local out = assert(io.open(threads[1]:get("pool_out"), "w"))
  for _, token in ipairs(threads[1]:get("pool")) do
    out:write(token .. "\n")
  end
  out:close()
end
