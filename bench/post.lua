-- wrk script for the ceiling run of bench/load.sh: POST the body webhook-sink renders
-- for a benchmark event, with the same headers it sends (Basic auth, content type, a
-- webhook-id of the same length), to the same nginx location.
--   BENCH_BODY_FILE  file holding the body (from `webhook-sink render`)
--   BENCH_AUTH       the Authorization header value
local path = os.getenv("BENCH_BODY_FILE")
local f = assert(io.open(path, "rb"), "cannot open BENCH_BODY_FILE " .. tostring(path))
local body = f:read("*a")
f:close()

wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = os.getenv("BENCH_AUTH")
wrk.headers["User-Agent"] = "webhook-sink/bench"
wrk.headers["webhook-id"] = "msg_0192d2f0a1b27c3d8e4f5a6b7c8d9e0f"

-- wrk counts non-2xx answers; report them so a 401 (wrong auth) cannot pass unseen.
function done(summary, latency, requests)
  io.stderr:write(string.format("wrk: %d requests, %d non-2xx, %d errors\n",
    summary.requests, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
