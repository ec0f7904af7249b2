-- POST a body naming a new account on every request: wrk register.lua URL -- CONTENT_TYPE TEMPLATE PREFIX
-- TEMPLATE holds %s where the unique name goes; PREFIX is unique to the run, so names never repeat.
local content_type, template, prefix
local counter = 0

function init(args)
  content_type, template, prefix = args[1], args[2], args[3]
end

function request()
  counter = counter + 1
  local name = prefix .. "t" .. thread_id .. "n" .. counter
  local body = string.format(template, name)
  return wrk.format("POST", nil, {["Content-Type"] = content_type}, body)
end
