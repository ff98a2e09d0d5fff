-- wrk script for bench/run.py: POST one small chat completion.
-- BENCH_BODY (the JSON body) and BENCH_API_KEY (sent as a Bearer token when
-- set) come from the environment, so the same script drives the mock upstream
-- directly and the gateway.
wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY") or '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}]}'
wrk.headers["Content-Type"] = "application/json"
local key = os.getenv("BENCH_API_KEY")
if key and key ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. key
end
