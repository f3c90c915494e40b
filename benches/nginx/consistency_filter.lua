-- The nginx+Lua contender of benches/compare.sh: the sidecar's five default fixing rules
-- (completed_stage, failed_stage, completed_progress, failed_progress, terminal_not_marked)
-- as an nginx body filter with lua-cjson. It is what an operator would write instead of the
-- sidecar, so the benchmark compares the same job: same fields fixed, consistent bodies sent
-- byte for byte. It has no task memory (the sidecar's tracker rules) and no metrics.

local cjson = require("cjson.safe")

local M = {}

-- A rule's condition needs its fields present (as in the sidecar's rule language); JSON null
-- decodes to cjson.null, which is present but equal to no string or number.
local function fix(record)
    local status, stage = record.status, record.stage
    local progress, done = record.progress, record.is_completed
    local changed = false
    if status == "completed" and stage ~= nil and stage ~= "completed" then
        record.stage = "completed"
        changed = true
    end
    if status == "failed" and stage ~= nil and stage ~= "failed" then
        record.stage = "failed"
        changed = true
    end
    if done == true and status == "completed" and progress ~= nil and progress ~= 100 then
        record.progress = 100
        changed = true
    end
    if done == true and status == "failed" and progress ~= nil and progress ~= 0 then
        record.progress = 0
        changed = true
    end
    if (status == "completed" or status == "failed") and done == false then
        record.is_completed = true
        changed = true
    end
    return changed
end

-- Returns the body to send: the original bytes unless a rule fixed something.
function M.fixed_body(body)
    local record = cjson.decode(body)
    if type(record) ~= "table" or not fix(record) then
        return body
    end
    return cjson.encode(record) or body
end

-- header_filter: inspect only 200 identity JSON answers; their length may change, so the
-- Content-Length goes (nginx then sends the body chunked).
function M.header()
    local ctype = ngx.header.content_type
    if ngx.status == 200 and ctype and ctype:find("json", 1, true)
        and not ngx.header.content_encoding then
        ngx.ctx.inspect = true
        ngx.header.content_length = nil
    end
end

-- body_filter: hold the chunks until the last one, then send the (maybe fixed) body at once.
function M.body()
    local ctx = ngx.ctx
    if not ctx.inspect then
        return
    end
    local chunk, eof = ngx.arg[1], ngx.arg[2]
    if chunk ~= "" then
        local held = ctx.held
        if not held then
            held = {}
            ctx.held = held
        end
        held[#held + 1] = chunk
    end
    if not eof then
        ngx.arg[1] = nil
        return
    end
    local held = ctx.held
    if held then
        ngx.arg[1] = M.fixed_body(#held == 1 and held[1] or table.concat(held))
    end
end

return M
