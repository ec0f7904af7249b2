-- POST the same body every time: wrk post.lua URL -- CONTENT_TYPE BODY
function init(args)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = args[1]
  wrk.body = args[2]
end
