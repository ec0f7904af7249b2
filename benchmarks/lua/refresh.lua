-- Spend refresh tokens, each one once: every answer's new refresh token goes back into the thread's pool.
-- wrk refresh.lua URL -- TOKEN_FILE THREADS (line i of the file goes to thread i mod THREADS)
local pool = {}

function init(args)
  local threads = tonumber(args[2])
  local index = 0
  for line in io.lines(args[1]) do
    if line ~= "" then
      if index % threads == thread_id - 1 then
        table.insert(pool, line)
      end
      index = index + 1
    end
  end
end

function request()
  -- An empty pool (only after failed refreshes) sends a token that is refused, so the error is counted.
  local token = table.remove(pool) or "exhausted"
  local body = '{"refresh_token": "' .. token .. '"}'
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, body)
end

function on_response(status, headers, body)
  local token = string.match(body, '"refresh_token"%s*:%s*"([^"]+)"')
  if token ~= nil then
    table.insert(pool, token)
  end
end
