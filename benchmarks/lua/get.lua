-- GET the URL, with a bearer token when one is given: wrk get.lua URL -- [token]
function init(args)
  if args[1] ~= nil and args[1] ~= "" then
    wrk.headers["Authorization"] = "Bearer " .. args[1]
  end
end
