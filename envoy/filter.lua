-- Envoy's Lua filter in front of llama.v1.LlamaServerHttp (docs/envoy.md). envoy/render.py puts
-- the settings below (CORS as the REST bridge's --cors-* flags, the --api-prefix) at the top.
--
-- Requests: a CORS preflight is answered here as the bridge answers it (Starlette's
-- CORSMiddleware: 200 "OK" or 400 "Disallowed CORS ..."); with an API prefix, the prefix is
-- taken off the path and a path without it is llama-server's 404.
-- Responses: the status the service wants (x-http-status) becomes :status, the helper and gRPC
-- headers go, and the CORS headers the bridge adds are added.

local SAFE_KEY = "llama.cors"
local GRPC = "application/grpc"

local function allowed_origin(origin)
  if ALLOW_ALL_ORIGINS then return true end
  if LOCAL_ONLY then
    for _, pattern in ipairs(LOCAL_PATTERNS) do
      if string.match(origin, pattern) then return true end
    end
    return false
  end
  return ORIGINS[origin] == true
end

local function add_vary(headers, value)
  local old = headers:get("vary")
  headers:replace("vary", old and (old .. ", " .. value) or value)
end

-- The headers the bridge adds to an answer for a request that came with `origin` (or none).
local function simple_cors(headers, origin)
  if not CORS then return end
  if origin ~= nil then
    if ALLOW_ALL_ORIGINS then headers:replace("access-control-allow-origin", "*") end
    if CREDENTIALS then headers:replace("access-control-allow-credentials", "true") end
  end
  if origin ~= nil and ((ALLOW_ALL_ORIGINS and CREDENTIALS)
      or (not ALLOW_ALL_ORIGINS and allowed_origin(origin))) then
    headers:replace("access-control-allow-origin", origin)
  end
  add_vary(headers, "Origin")
end

local function preflight(handle, origin, method, requested)
  local out = {[":status"] = "200", ["content-type"] = "text/plain; charset=utf-8",
               ["vary"] = "Origin, Access-Control-Request-Method, " ..
                          "Access-Control-Request-Headers, Access-Control-Request-Private-Network",
               ["access-control-allow-methods"] = METHODS, ["access-control-max-age"] = "600"}
  local explicit = (not ALLOW_ALL_ORIGINS) or CREDENTIALS
  if not explicit then out["access-control-allow-origin"] = "*" end
  if not ALLOW_ALL_HEADERS then out["access-control-allow-headers"] = HEADERS end
  if CREDENTIALS then out["access-control-allow-credentials"] = "true" end
  local failures = {}
  if allowed_origin(origin) then
    if explicit then out["access-control-allow-origin"] = origin end
  else
    table.insert(failures, "origin")
  end
  if not METHOD_SET[method] then table.insert(failures, "method") end
  if ALLOW_ALL_HEADERS and requested ~= nil then
    out["access-control-allow-headers"] = requested
  elseif requested ~= nil then
    for header in string.gmatch(requested, "[^,]+") do
      local name = string.lower((string.gsub(header, "^%s*(.-)%s*$", "%1")))
      if not HEADER_SET[name] then
        table.insert(failures, "headers")
        break
      end
    end
  end
  if handle:headers():get("access-control-request-private-network") ~= nil then
    table.insert(failures, "private-network")
  end
  local body = "OK"
  -- Answered as it is: no CORS headers added on the way out, local_reply_config leaves it.
  handle:streamInfo():dynamicMetadata():set(SAFE_KEY, "preflight", "1")
  if #failures > 0 then
    out[":status"] = "400"
    body = "Disallowed CORS " .. table.concat(failures, ", ")
  end
  handle:respond(out, body)
end

local METHOD_NOT_ALLOWED =
  '{"error":{"code":405,"message":"Method Not Allowed","type":"invalid_request_error"}}'

-- As the bridge's router: a path with a trailing slash is no route (404, no redirect); a
-- known path asked with another method is 405 with the first route's methods in Allow.
local function check_route(handle, headers)
  local path = string.match(headers:get(":path"), "^[^?]*")
  if #path > 1 and string.sub(path, -1) == "/" then
    handle:respond({[":status"] = "404", ["content-type"] = "application/json; charset=utf-8"},
                   NOT_FOUND)
    return
  end
  local method, allow = headers:get(":method"), nil
  for _, route in ipairs(ROUTES) do
    if string.match(path, route[1]) then
      for m in string.gmatch(route[2], "[^, ]+") do
        if m == method then return end
      end
      allow = allow or route[2]
    end
  end
  if allow ~= nil then
    handle:respond({[":status"] = "405", ["allow"] = allow,
                    ["content-type"] = "application/json; charset=utf-8"}, METHOD_NOT_ALLOWED)
  end
end

function envoy_on_request(handle)
  local headers = handle:headers()
  local origin = headers:get("origin")
  local grpc = string.sub(headers:get("content-type") or "", 1, #GRPC) == GRPC
  if CORS and origin ~= nil and not grpc then
    if headers:get(":method") == "OPTIONS"
        and headers:get("access-control-request-method") ~= nil then
      preflight(handle, origin, headers:get("access-control-request-method"),
                headers:get("access-control-request-headers"))
      return
    end
    handle:streamInfo():dynamicMetadata():set(SAFE_KEY, "origin", origin)
  end
  if grpc then return end
  if PREFIX ~= "" then
    local path = headers:get(":path")
    local rest = string.sub(path, #PREFIX + 1)
    if string.sub(path, 1, #PREFIX) == PREFIX and (rest == "" or string.match(rest, "^[/?]")) then
      headers:replace(":path", rest == "" and "/" or rest)
      handle:clearRouteCache()
    else  -- its CORS headers are added on the way out, as to any answer
      handle:respond({[":status"] = "404", ["content-type"] = "application/json; charset=utf-8"},
                     NOT_FOUND)
      return
    end
  end
  check_route(handle, headers)
end

function envoy_on_response(handle)
  local headers = handle:headers()
  local status = headers:get("x-http-status")
  if status ~= nil then
    headers:replace(":status", status)
    headers:remove("x-http-status")
  end
  local content_type = headers:get("content-type") or ""
  if string.sub(content_type, 1, #GRPC) == GRPC then
    return  -- a native gRPC client's answer: as it is, no CORS
  end
  for _, name in ipairs({"grpc-accept-encoding", "grpc-encoding", "grpc-status",
                         "grpc-message", "x-retry-elsewhere"}) do
    headers:remove(name)
  end
  -- A streamed body's known length (GET /slots/{id}/export): the service cannot send it as
  -- content-length, which on the gRPC hop would be checked against the gRPC frames.
  local length = headers:get("x-content-length")
  if length ~= nil then
    headers:replace("content-length", length)
    headers:remove("x-content-length")
  end
  -- JSON as the bridge labels it (the typed transcoder's, Envoy's health answers).
  if content_type == "application/json" then
    headers:replace("content-type", "application/json; charset=utf-8")
  end
  headers:remove("x-envoy-upstream-healthchecked-cluster")
  local meta = handle:streamInfo():dynamicMetadata():get(SAFE_KEY)
  if meta and meta["preflight"] then return end
  simple_cors(headers, meta and meta["origin"] or nil)
end
