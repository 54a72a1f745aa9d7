-- Switchboard's edge filter (DESIGN.md §4, "The edge"). It runs before the gRPC-JSON transcoder,
-- so it sees REST requests before they become gRPC and JSON responses after they were gRPC.
-- The native gRPC route disables it: gRPC traffic never reaches this code.
--
-- Request side:  SSE resume (Last-Event-ID -> ?after=), family B form bodies -> JSON, and the
--                keys of a JSON body (x-switchboard-json-fields) for the unknown-key check.
-- Response side: documented success codes (x-switchboard-http-status); family B bare-array
--                lists (x-switchboard-bare-list names the list field: the body becomes that
--                array's text, next_page_token the X-Next-Page-Token header); and every error
--                body (google.rpc.Status from the transcoder, or Envoy's own JSON local reply)
--                rewritten into the route family's documented shape; on SSE routes, an `id:`
--                line (the event's cursor) before each event frame, chunk by chunk. Only lists
--                and errors are buffered: any other success may be an unbounded stream.
--
-- The family (A, B or C) comes from the route's metadata under this filter's name; `sse` marks
-- a Server-Sent Events route. Envoy's Lua has no JSON library, hence the small one below.

local STATE = "switchboard.edge" -- dynamic metadata namespace: request facts the response needs

---------------------------------------------------------------------------------------------------
-- JSON
-- Decoded objects and arrays are plain tables (null becomes nil). For encoding, objects are built
-- with object(k1, v1, k2, v2, ...) so keys keep the documented order, and arrays with array{...}
-- so that an empty one still prints as [].
-- Decoding is as lenient as the transcoder's parser (protobuf's JsonStreamParser), so that every
-- request body it takes decodes here too: 'single-quoted' strings, bare keys, trailing commas,
-- \v and \f as space, \X as X for any other escape, and whatever strtod makes of a number.
---------------------------------------------------------------------------------------------------

local OBJECT, ARRAY = {}, {}

local function object(...)
  return setmetatable({ n = select("#", ...), ... }, OBJECT)
end

local function array(items)
  return setmetatable(items, ARRAY)
end

local ESCAPE = { ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f",
                 ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t" }

local function quote(s)
  return '"' .. (s:gsub('[%c"\\]', function(c)
    return ESCAPE[c] or string.format("\\u%04x", c:byte())
  end)) .. '"'
end

local encode

local function encode_number(n)
  if n ~= n or n == math.huge or n == -math.huge then return "null" end
  if n == math.floor(n) and math.abs(n) < 2 ^ 53 then return string.format("%d", n) end
  return string.format("%.17g", n)
end

function encode(v)
  local t = type(v)
  if t == "string" then return quote(v) end
  if t == "number" then return encode_number(v) end
  if t == "boolean" then return tostring(v) end
  if t == "table" then
    local out = {}
    if getmetatable(v) == OBJECT then
      for i = 1, v.n, 2 do
        out[#out + 1] = quote(tostring(v[i])) .. ":" .. encode(v[i + 1])
      end
      return "{" .. table.concat(out, ",") .. "}"
    end
    for i = 1, #v do out[i] = encode(v[i]) end
    return "[" .. table.concat(out, ",") .. "]"
  end
  return "null"
end

local UNESCAPE = { b = "\b", f = "\f", n = "\n", r = "\r", t = "\t", v = "\v" }

local function utf8_char(cp)
  local f = math.floor
  if cp < 0x80 then return string.char(cp) end
  if cp < 0x800 then return string.char(0xC0 + f(cp / 0x40), 0x80 + cp % 0x40) end
  if cp < 0x10000 then
    return string.char(0xE0 + f(cp / 0x1000), 0x80 + f(cp / 0x40) % 0x40, 0x80 + cp % 0x40)
  end
  return string.char(0xF0 + f(cp / 0x40000), 0x80 + f(cp / 0x1000) % 0x40,
                     0x80 + f(cp / 0x40) % 0x40, 0x80 + cp % 0x40)
end

local function skip(s, i)
  return s:find("%S", i) or #s + 1
end

local function decode_string(s, i) -- s[i] is the opening quote, " or '
  local stop = s:byte(i) == 39 and "['\\]" or '["\\]'
  local parts, j = {}, i + 1
  while true do
    local k = s:find(stop, j)
    if not k then error("unterminated string") end
    parts[#parts + 1] = s:sub(j, k - 1)
    if s:byte(k) ~= 92 then return table.concat(parts), k + 1 end
    local c = s:sub(k + 1, k + 1)
    if c == "u" then
      local hex = s:match("^%x%x%x%x", k + 2)
      if not hex then error("bad \\u escape") end
      local cp = tonumber(hex, 16)
      j = k + 6
      local low = cp >= 0xD800 and cp <= 0xDBFF and s:match("^\\u([dD][c-fC-F]%x%x)", j)
      if low then -- a surrogate pair is one character
        cp = 0x10000 + (cp - 0xD800) * 0x400 + (tonumber(low, 16) - 0xDC00)
        j = j + 6
      end
      parts[#parts + 1] = utf8_char(cp)
    elseif c == "" then
      error("unterminated string")
    else
      parts[#parts + 1] = UNESCAPE[c] or c
      j = k + 2
    end
  end
end

-- Key paths of a request body, for report_json_fields (below). They are recorded while parsing,
-- not read from the result, because a null value leaves no trace in the decoded table.
local JSON_FIELDS_MAX = 8192 -- bytes of header; the server checks whatever paths fit
-- Long keys nested deep, or under a long array, would make the paths far larger than the body;
-- past this many bytes of paths built, the rest are not recorded (they could never all fit).
local JSON_FIELDS_WORK = 16 * 1048576

-- Percent-encodes what would make a path ambiguous (. [ ] and the , between paths, % itself) or
-- unsafe in a header (space, controls, non-ASCII bytes).
local function path_key(key)
  return (key:gsub("[%z\1-\32%%,%.%[%]\127-\255]", function(c)
    return string.format("%%%02X", c:byte())
  end))
end

-- The path of `key` inside the value at `path`, recorded in `fields`; nil past the limits.
local function key_path(fields, path, key)
  if not path or #path + #key > JSON_FIELDS_MAX or fields.work > JSON_FIELDS_WORK then
    return nil
  end
  local sub = (path == "" and "" or path .. ".") .. path_key(key)
  fields.paths[sub] = true
  fields.work = fields.work + #sub
  return sub
end

-- `fields` and `path`, when given, collect key paths (see above). The depth limit is above the
-- transcoder's (100), so every body it accepts gets its keys listed.
local function decode_value(s, i, depth, fields, path)
  if depth > 128 then error("too deep") end
  i = skip(s, i)
  local c = s:sub(i, i)
  if c == "{" then
    local obj = {}
    i = skip(s, i + 1)
    while true do
      c = s:sub(i, i)
      if c == "}" then return obj, i + 1 end -- empty, or after a trailing comma
      local key
      if c == '"' or c == "'" then
        key, i = decode_string(s, i)
      else
        key = s:match("^[A-Za-z_$][A-Za-z0-9_$]*", i)
        if not key then error("expected key") end
        i = i + #key
      end
      i = skip(s, i)
      if s:sub(i, i) ~= ":" then error("expected ':'") end
      local sub = fields and key_path(fields, path, key)
      obj[key], i = decode_value(s, i + 1, depth + 1, fields, sub)
      i = skip(s, i)
      c = s:sub(i, i)
      if c == "}" then return obj, i + 1 end
      if c ~= "," then error("expected ',' or '}'") end
      i = skip(s, i + 1)
    end
  elseif c == "[" then
    local arr, n = {}, 0
    i = skip(s, i + 1)
    while true do
      if s:sub(i, i) == "]" then return arr, i + 1 end -- empty, or after a trailing comma
      n = n + 1
      arr[n], i = decode_value(s, i, depth + 1, fields, path and path .. "[]")
      i = skip(s, i)
      c = s:sub(i, i)
      if c == "]" then return arr, i + 1 end
      if c ~= "," then error("expected ',' or ']'") end
      i = skip(s, i + 1)
    end
  elseif c == '"' or c == "'" then
    return decode_string(s, i)
  elseif s:sub(i, i + 3) == "true" then
    return true, i + 4
  elseif s:sub(i, i + 4) == "false" then
    return false, i + 5
  elseif s:sub(i, i + 3) == "null" then
    return nil, i + 4
  end
  local num = s:match("^[-%d][-+.%dxeE]*", i)
  local value = num and tonumber(num)
  if not value then error("unexpected character at " .. i) end
  return value, i + #num
end

local function decode(s, fields)
  local value, i = decode_value(s, 1, 0, fields, fields and "")
  if skip(s, i) <= #s then error("trailing data") end
  return value
end

---------------------------------------------------------------------------------------------------
-- Requests
---------------------------------------------------------------------------------------------------

local function percent_decode(s)
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

-- A form or query component: '+' is a space there (not in a path).
local function url_decode(s)
  return percent_decode((s:gsub("+", " ")))
end

local function url_encode(s)
  return (s:gsub("[^%w%-%._~]", function(c) return string.format("%%%02X", c:byte()) end))
end

-- Family B accepts application/x-www-form-urlencoded wherever it accepts JSON. Values stay JSON
-- strings (the transcoder accepts "7" for numbers), except true/false, which it does not accept
-- quoted; a repeated key becomes an array (it also accepts one scalar for a repeated field).
local function form_to_json(raw)
  local keys, values = {}, {}
  for pair in raw:gmatch("[^&]+") do
    local k, v = pair:match("^([^=]*)=?(.*)$")
    -- A pair without a name ("=x") stays in: refused like {"": "x"}, never silently dropped.
    k = url_decode(k)
    local value = url_decode(v)
    if value == "true" then
      value = true
    elseif value == "false" then
      value = false
    end
    local previous = values[k]
    if previous == nil then
      keys[#keys + 1] = k
      values[k] = value
    elseif getmetatable(previous) == ARRAY then
      previous[#previous + 1] = value
    else
      values[k] = array({ previous, value })
    end
  end
  local fields = object()
  for _, k in ipairs(keys) do
    fields[fields.n + 1], fields[fields.n + 2] = k, values[k]
    fields.n = fields.n + 2
  end
  return encode(fields)
end

local function convert_form_body(handle, headers)
  local method = headers:get(":method")
  if method ~= "POST" and method ~= "PUT" then return end
  local content_type = (headers:get("content-type") or ""):lower()
  if not content_type:find("^application/x%-www%-form%-urlencoded") then return end
  local body = handle:body(true)
  local raw = body:length() > 0 and body:getBytes(0, body:length()) or ""
  -- `curl -d '{"a":1}'` labels JSON as a form. No form body starts with { or [ (a key would
  -- have to), so such a body is taken for the JSON it is.
  local json = raw:find("^%s*[%[{]") and raw or form_to_json(raw)
  body:setBytes(json)
  headers = handle:headers() -- the one taken before body() went stale while it waited
  headers:replace("content-type", "application/json")
  headers:replace("content-length", tostring(#json))
end

-- The transcoder silently drops JSON keys its message lacks (envoyproxy/envoy#46623), so the
-- server rejects them instead, checking the paths listed here against the request message: keys
-- relative to the HTTP body, joined with ".", array elements as "[]", every prefix included,
-- sorted, comma-separated. Parsed here rather than by the server because only the edge still has
-- the JSON; the transcoder forwards the header as gRPC metadata.
local JSON_FIELDS = "x-switchboard-json-fields"
-- The listener's buffer limit and the largest JSON body accepted: a larger one is a 413, whether
-- declared by content-length or sent chunked (body() below cannot buffer it).
local JSON_FIELDS_MAX_BODY = 1048576

local function report_json_fields(handle)
  local headers = handle:headers()
  -- The transcoder reads any body as JSON whatever its content-type says, so every body is
  -- listed, except multipart uploads (google.api.HttpBody methods take them as bytes).
  if (headers:get("content-type") or ""):lower():find("^multipart/") then return end
  -- Decide from content-length before buffering: no body, or one larger than any JSON request
  -- may be (refused like a chunked one that outgrows the buffer).
  local declared = tonumber(headers:get("content-length") or "")
  if declared == 0 then return end
  if declared and declared > JSON_FIELDS_MAX_BODY then
    handle:respond({ [":status"] = "413" },
                   "request body exceeds " .. JSON_FIELDS_MAX_BODY .. " bytes")
    return
  end
  local body = handle:body(true)
  local length = body:length()
  if length == 0 or length > JSON_FIELDS_MAX_BODY then return end
  local fields = { paths = {}, work = 0 }
  local raw = body:getBytes(0, length)
  -- The transcoder reads a top-level null as an empty message (POST /contacts would create an
  -- empty contact). No RPC takes null for its body: refuse it here. Arrays and other scalars
  -- the transcoder refuses itself.
  if raw:match("^%s*null%s*$") then
    handle:respond({ [":status"] = "400" }, "body: must be a JSON object, not null")
    return
  end
  -- Not JSON, or a bare scalar: nothing to list, and the transcoder answers with its own 400.
  local ok, doc = pcall(decode, raw, fields)
  if not ok or type(doc) ~= "table" then return end
  local paths = {}
  for path in pairs(fields.paths) do paths[#paths + 1] = path end
  table.sort(paths)
  local kept, size = {}, -1
  for _, path in ipairs(paths) do
    size = size + 1 + #path
    if size > JSON_FIELDS_MAX then break end
    kept[#kept + 1] = path
  end
  handle:headers():replace(JSON_FIELDS, table.concat(kept, ","))
end

-- An EventSource reconnects with Last-Event-ID; the RPC resumes from `after`. An explicit
-- ?after= wins.
local function resume_from_last_event_id(headers)
  local last = headers:get("last-event-id")
  if not last or last == "" then return end
  local path = headers:get(":path")
  local query = path:match("%?(.*)$")
  if query and ("&" .. query):find("&after=", 1, true) then return end
  local sep = (not query and "?") or (query == "" and "") or "&"
  headers:replace(":path", path .. sep .. "after=" .. url_encode(last))
end

-- A browser's EventSource cannot send Authorization: on an SSE route a stream token
-- (CreateStreamToken) may come as ?access_token=<token>. It moves into the Authorization header
-- (an explicit header wins) and leaves the path, which the transcoder would refuse with an unknown
-- parameter and which the access log must not print (loggable_path redacts it before this runs).
-- Only SSE routes do this; the server accepts such a token on Stream* RPCs only.
local function take_access_token(headers)
  local path = headers:get(":path")
  local base, query = path:match("^([^?]*)%?(.*)$")
  if not query then return end
  local kept, token = {}, nil
  for pair in query:gmatch("[^&]+") do
    if url_decode(pair:match("^[^=]*")) == "access_token" then
      token = url_decode(pair:match("^[^=]*=?(.*)$"))
    else
      kept[#kept + 1] = pair
    end
  end
  if token == nil then return end
  headers:replace(":path", #kept > 0 and (base .. "?" .. table.concat(kept, "&")) or base)
  if token ~= "" and not headers:get("authorization") then
    headers:replace("authorization", "Bearer " .. token)
  end
end

-- The access log's path, with the secrets some URLs carry replaced: an access token's secret in
-- a path segment (atk_<id>.<secret>, e.g. the attachment content URL) and the value of any query
-- parameter named like a secret (qrToken, token, hub.verify_token, ...). Decoded first, so that
-- %-escapes cannot hide one. The access log prints this instead of the request's :path.
local SECRET_PARAMETER = { "token", "secret", "password", "signature", "key" }

local function secret_parameter(name)
  name = name:lower()
  for _, word in ipairs(SECRET_PARAMETER) do
    if name:find(word, 1, true) then return true end
  end
  return false
end

local function loggable_path(path)
  local base, query = path:match("^([^?]*)%??(.*)$")
  base = percent_decode(base):gsub("(atk_%w+)[^%w/][^/]*", "%1.REDACTED")
  if query == "" then return base end
  local parts = {}
  for pair in query:gmatch("[^&]+") do
    local name = url_decode(pair:match("^[^=]*"))
    parts[#parts + 1] = secret_parameter(name) and (name .. "=REDACTED") or url_decode(pair)
  end
  return base .. "?" .. table.concat(parts, "&")
end

-- The largest request head (names and values of every header, :path included) a REST client may
-- send. Envoy's codec lets up to 96 KiB through (envoy.yaml.in) so that the 431 is answered here,
-- on a route, in its family's shape; past 96 KiB the codec's own 431 is all Envoy can say.
local MAX_REQUEST_HEAD = 61440
-- Methods of the REST APIs (HEAD and OPTIONS reach the transcoder, which answers 404). The
-- codec lets any token through (allow_custom_methods) so that this 405 has the family's shape.
local METHODS = { GET = true, POST = true, PUT = true, DELETE = true, PATCH = true, HEAD = true,
                  OPTIONS = true }

local function head_size(headers)
  local size = 0
  for key, value in pairs(headers) do size = size + #key + #value end
  return size
end

function envoy_on_request(handle)
  local headers = handle:headers()
  -- Belt and braces: the gRPC route already disables this filter.
  if (headers:get("content-type") or ""):find("^application/grpc") then return end
  handle:streamInfo():dynamicMetadata():set(STATE, "path", loggable_path(headers:get(":path")))
  -- Only this filter may tell the server which keys a body had.
  headers:remove(JSON_FIELDS)
  local meta = handle:metadata()
  local family = meta:get("family")
  if family == "A" then
    -- Family A error bodies quote it as `ref`; response headers do not carry it yet.
    handle:streamInfo():dynamicMetadata():set(STATE, "request_id",
                                              headers:get("x-request-id") or "")
  end
  if head_size(headers) > MAX_REQUEST_HEAD then
    handle:respond({ [":status"] = "431" },
                   "request headers exceed " .. MAX_REQUEST_HEAD .. " bytes")
    return
  end
  local method = headers:get(":method")
  if not METHODS[method] then
    handle:respond({ [":status"] = "405", ["allow"] = "GET, POST, PUT, DELETE" },
                   "method " .. method .. " is not allowed")
    return
  end
  if meta:get("sse") then
    take_access_token(headers)
    resume_from_last_event_id(headers)
  elseif family == "B" then
    convert_form_body(handle, headers) -- into JSON, so its keys are listed below
  end
  report_json_fields(handle)
end

---------------------------------------------------------------------------------------------------
-- Responses
---------------------------------------------------------------------------------------------------

local PHRASES = {
  [400] = "Bad Request", [401] = "Unauthorized", [402] = "Payment Required", [403] = "Forbidden",
  [404] = "Not Found", [405] = "Method Not Allowed", [406] = "Not Acceptable",
  [408] = "Request Timeout", [409] = "Conflict", [410] = "Gone", [411] = "Length Required",
  [412] = "Precondition Failed", [413] = "Payload Too Large", [414] = "URI Too Long",
  [415] = "Unsupported Media Type", [422] = "Unprocessable Entity", [429] = "Too Many Requests",
  [431] = "Request Header Fields Too Large", [499] = "Client Closed Request",
  [500] = "Internal Server Error", [501] = "Not Implemented", [502] = "Bad Gateway",
  [503] = "Service Unavailable", [504] = "Gateway Timeout",
}

-- ServiceStack's ErrorCode for a status (family C).
local SERVICESTACK = {
  [400] = "ValidationException", [401] = "Unauthorized", [402] = "PaymentRequired",
  [403] = "Forbidden", [404] = "NotFound", [409] = "Conflict", [412] = "PreconditionFailed",
  [405] = "MethodNotAllowed", [413] = "PayloadTooLarge", [429] = "TooManyRequests",
  [431] = "RequestHeaderFieldsTooLarge", [500] = "InternalServerError",
  [503] = "ServiceUnavailable",
}

local ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"
local BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"

local function str(v)
  if type(v) == "string" then return v end
  if type(v) == "number" then return encode_number(v) end
  return nil
end

-- Proto3 prints unset strings as "" (always_print_primitive_fields): treat them as absent.
local function nonempty(v)
  v = str(v)
  if v == "" then return nil end
  return v
end

-- What an error response says, whatever produced it: a google.rpc.Status printed by the
-- transcoder (convert_grpc_status), Envoy's local reply ({"code": <http>, "message": ...}),
-- or anything else (then only the HTTP status is known).
local function read_error(raw, status)
  local err = { status = status, violations = {} }
  local ok, doc = pcall(decode, raw)
  if not ok or type(doc) ~= "table" then
    err.message = "upstream error"
    return err
  end
  err.message = str(doc.message)
  -- gRPC codes are 1..16; a local reply's code is its HTTP status.
  if type(doc.code) == "number" and doc.code >= 1 and doc.code <= 16 then
    err.grpc_code = doc.code
  end
  if type(doc.details) == "table" then
    for _, detail in ipairs(doc.details) do
      if type(detail) == "table" and detail["@type"] == ERROR_INFO then
        err.reason = nonempty(detail.reason)
        local http = type(detail.metadata) == "table" and tonumber(detail.metadata.http_status)
        if http and http >= 100 and http <= 599 then err.status = math.floor(http) end
      elseif type(detail) == "table" and detail["@type"] == BAD_REQUEST then
        -- camelCase or snake_case, depending on the route's print options.
        local list = detail.fieldViolations or detail.field_violations
        for _, v in ipairs(type(list) == "table" and list or {}) do
          if type(v) == "table" then
            err.violations[#err.violations + 1] = {
              field = str(v.field) or "", description = str(v.description) or "",
              reason = nonempty(v.reason),
            }
          end
        end
      end
    end
  end
  -- Without ErrorInfo, a 5xx did not come from our error mapping (a crash, Envoy's upstream
  -- failure): its text may name internals, so only the status is told.
  if not err.reason and err.status >= 500 then err.message = nil end
  err.message = err.message or (PHRASES[err.status] or "upstream error"):lower()
  err.reason = err.reason or tostring(err.status)
  return err
end

local function family_a(err, request_id)
  local title = PHRASES[err.status] or "Error"
  local errors = { object("code", err.reason, "title", title, "details", err.message,
                          "ref", request_id, "httpStatusCode", err.status) }
  for _, v in ipairs(err.violations) do
    errors[#errors + 1] = object("code", v.reason or err.reason, "title", v.field,
                                 "details", v.description, "ref", request_id,
                                 "httpStatusCode", err.status)
  end
  return object("errors", array(errors))
end

local function family_b(err)
  local description = err.message
  for _, v in ipairs(err.violations) do
    local detail = (v.field and v.field ~= "") and (v.field .. ": " .. v.description)
      or v.description
    -- Messages built from the violations already say it (core.errors.validation_error).
    if not description:find(detail, 1, true) then
      description = description .. "; " .. detail
    end
  end
  return object("error_code", err.reason, "error_description", description)
end

local function family_c(err)
  local errors = {}
  for _, v in ipairs(err.violations) do
    errors[#errors + 1] = object("ErrorCode", v.reason or "Invalid", "FieldName", v.field,
                                 "Message", v.description)
  end
  local name = SERVICESTACK[err.status] or ("HttpError" .. err.status)
  return object("ResponseStatus", object("ErrorCode", name, "Message", err.message,
                                         "Errors", array(errors)))
end

local SHAPES = { A = family_a, B = family_b, C = family_c }

local function rewrite_error(handle, status, family)
  local body = handle:body(true)
  -- Header handles taken before body() went stale while the script waited for the body.
  local headers = handle:headers()
  local raw = body:length() > 0 and body:getBytes(0, body:length()) or ""
  local request_id = ""
  if family == "A" then
    local state = handle:streamInfo():dynamicMetadata():get(STATE)
    request_id = state and state.request_id or ""
  end
  -- A bug here must not let the raw upstream body through: fall back to the bare status.
  local ok, err, json = pcall(function()
    local e = read_error(raw, status)
    return e, encode((SHAPES[family] or family_b)(e, request_id))
  end)
  if not ok then
    handle:logErr("edge.lua: cannot rewrite error body: " .. tostring(err))
    err = { status = status, reason = tostring(status), message = "upstream error",
            violations = {} }
    json = encode((SHAPES[family] or family_b)(err, request_id))
  end
  body:setBytes(json)
  headers:replace(":status", tostring(err.status))
  headers:replace("content-type", "application/json")
  headers:replace("content-length", tostring(#json))
  -- The access log's grpc_status reads this; the transcoder consumed the upstream's.
  if err.grpc_code and not headers:get("grpc-status") then
    headers:replace("grpc-status", tostring(err.grpc_code))
  end
end

-- Family B lists are bare arrays. The list RPC names its repeated field in the response header
-- x-switchboard-bare-list; the body becomes that field's JSON text exactly as the transcoder
-- printed it (the span is cut out rather than decoded and re-encoded, which would lose the
-- elements' key order), [] when the field is absent, and a non-empty next_page_token moves to
-- the X-Next-Page-Token header.
local BARE_LIST = "x-switchboard-bare-list"

-- Where the value starting at s[i] ends (the index after it), for strict JSON as the transcoder
-- prints it. Arrays and objects are scanned with string.find from bracket to quote to bracket:
-- decode_value would build every element only to throw it away, which took twice as long on a
-- 1 MB list (about 0.2 s of the worker's time rather than 0.1 s).
local function skip_value(s, i)
  local c = s:sub(i, i)
  if c ~= "[" and c ~= "{" then
    local _, j = decode_value(s, i, 1)
    return j
  end
  local depth = 0
  while true do
    i = s:find('[][{}"]', i)
    if not i then error("unterminated value") end
    c = s:byte(i)
    if c == 34 then -- a string: on to its closing quote, past escaped characters
      repeat
        i = s:find('["\\]', i + 1)
        if not i then error("unterminated string") end
        local escaped = s:byte(i) == 92
        if escaped then i = i + 1 end
      until not escaped
    elseif c == 91 or c == 123 then
      depth = depth + 1
    else
      depth = depth - 1
      if depth == 0 then return i + 1 end
    end
    i = i + 1
  end
end

-- The text of the top-level `field` of the JSON object `s` (nil when absent), and the top-level
-- next_page_token. Errors when `s` is not an object or the field is not an array.
local function cut_list(s, field)
  local i = skip(s, 1)
  if s:sub(i, i) ~= "{" then error("not a JSON object") end
  i = skip(s, i + 1)
  local list, token
  while s:sub(i, i) ~= "}" do
    local key
    key, i = decode_string(s, i)
    i = skip(s, i)
    if s:sub(i, i) ~= ":" then error("expected ':'") end
    local start = skip(s, i + 1)
    if key == field then
      if s:sub(start, start) ~= "[" then error(field .. " is not an array") end
      i = skip_value(s, start)
      list = s:sub(start, i - 1)
    elseif key == "next_page_token" then
      token, i = decode_value(s, start, 1)
    else
      i = skip_value(s, start)
    end
    i = skip(s, i)
    local c = s:sub(i, i)
    if c == "," then
      i = skip(s, i + 1)
    elseif c ~= "}" then
      error("expected ',' or '}'")
    end
  end
  return list, token
end

local function unwrap_list(handle, field)
  local body = handle:body(true)
  local headers = handle:headers() -- the one taken before body() went stale while it waited
  local raw = body:length() > 0 and body:getBytes(0, body:length()) or ""
  local ok, list, token = pcall(cut_list, raw, field)
  if not ok then -- a server bug: leave the body as it is rather than break it further
    handle:logErr("edge.lua: cannot unwrap list " .. field .. ": " .. tostring(list))
    return
  end
  list = list or "[]"
  body:setBytes(list)
  headers:replace("content-length", tostring(#list))
  if type(token) == "string" and token ~= "" then
    headers:replace("x-next-page-token", token)
  end
end

-- SSE event ids. The transcoder prints each streamed message as one frame, "data: <json>\n\n"
-- (its JSON has no raw newline). A frame about an event gets "id: <cursor>" first: an EventSource
-- remembers it and sends it back as Last-Event-ID when it reconnects, which becomes ?after=
-- (resume_from_last_event_id above), so the stream resumes right after the last event it had.
-- Heartbeats carry the stream's cursor but get no id: they never move the client's resume point.
local function event_id(json)
  local ok, event = pcall(decode, json)
  if not ok or type(event) ~= "table" or type(event.envelope) ~= "table" then return nil end
  local envelope = event.envelope
  if envelope.type == "heartbeat" then return nil end
  local cursor = envelope.cursor
  if type(cursor) == "string" and cursor:match("^%d+$") then return cursor end
  return nil
end

local function with_event_ids(text)
  return (text:gsub("data: ([^\n]*)\n\n", function(json)
    local id = event_id(json)
    if id then return "id: " .. id .. "\ndata: " .. json .. "\n\n" end
  end))
end

-- Each chunk as it comes (a stream is unbounded: nothing is buffered).
local function add_event_ids(handle)
  for chunk in handle:bodyChunks() do
    local n = chunk:length()
    if n > 0 then
      local text = chunk:getBytes(0, n)
      local out = with_event_ids(text)
      if out ~= text then chunk:setBytes(out) end
    end
  end
end

function envoy_on_response(handle)
  local headers = handle:headers()
  local status = tonumber(headers:get(":status")) or 500
  local wanted = headers:get("x-switchboard-http-status")
  if wanted then headers:remove("x-switchboard-http-status") end
  local list_field = headers:get(BARE_LIST)
  if list_field then headers:remove(BARE_LIST) end
  local meta = handle:metadata()
  local family = meta:get("family") or "B"
  if status < 400 then
    -- Documented success codes (201, 202, 206, ...) arrive as gRPC initial metadata.
    if wanted and status == 200 and wanted:match("^[23]%d%d$") then
      headers:replace(":status", wanted)
    end
    -- Otherwise never buffer a success: it may be an unbounded stream. A unary list response
    -- (only those carry the header) is buffered to cut out its array.
    if list_field and status == 200 and family == "B" and not meta:get("sse") then
      unwrap_list(handle, list_field)
    elseif meta:get("sse") and status == 200 then
      add_event_ids(handle)
    end
    return
  end
  rewrite_error(handle, status, family)
end
