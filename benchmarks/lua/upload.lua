-- POST one multipart body read from a file, with bearer tokens taken in turn from a file (none: no header).
-- wrk upload.lua URL -- BODY_FILE CONTENT_TYPE [TOKEN_FILE]
local body, content_type
local tokens = {}
local next_token = 0

function init(args)
  local handle = assert(io.open(args[1], "rb"))
  body = handle:read("*a")
  handle:close()
  content_type = args[2]
  if args[3] ~= nil and args[3] ~= "" then
    for line in io.lines(args[3]) do
      if line ~= "" then
        table.insert(tokens, line)
      end
    end
  end
end

function request()
  local headers = {["Content-Type"] = content_type}
  if #tokens > 0 then
    next_token = next_token % #tokens + 1
    headers["Authorization"] = "Bearer " .. tokens[next_token]
  end
  return wrk.format("POST", nil, headers, body)
end
