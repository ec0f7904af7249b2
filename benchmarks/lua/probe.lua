-- A light probe: GET the URL, waiting DELAY ms between a connection's requests: wrk probe.lua URL -- DELAY
local delay_ms = 5

function init(args)
  delay_ms = tonumber(args[1]) or delay_ms
end

function delay()
  return delay_ms
end
