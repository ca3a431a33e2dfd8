"""route.py: switchboard from Python.

Two backends serve "gpt-4o". First the script routes by hand, as a service
with its own HTTP client would: the primary answers 429 (simulated), the
router cools it down and the plan moves to the fallback; the trace says why.
Then, given an upstream URL, the proxy engine sends real requests there,
whole and streamed.

    PYTHONPATH=build/ci/python python3 examples/python/route.py [UPSTREAM_URL]

UPSTREAM_URL is an OpenAI-compatible base without /v1 (the tests use the
mock in tests/embed/mock_upstream.py, whose /r429 prefix always answers 429).
"""

import sys

import switchboard as sb


def main(upstream=None):
    base = upstream or "http://127.0.0.1:9"
    storage = sb.memory_storage()
    cipher = sb.KeyCipher.generate()
    with sb.Router(storage) as router:
        admin = sb.Admin(storage, router, cipher)
        admin.create_backend({"name": "primary-1", "pool": "primary",
                              "api_base_url": base + "/r429/v1", "api_key": "sk-example-primary-1",
                              "model_mappings": {"gpt-4o": "gpt-4o-2024-08-06"}})
        admin.create_backend({"name": "fallback-1", "pool": "fallback",
                              "api_base_url": base + "/v1", "api_key": "sk-example-fallback-1",
                              "model_mappings": {"gpt-4o": "gpt-4o-2024-08-06"}})

        # Routing by hand: send the request yourself, report what happened.
        plan = router.route("gpt-4o")
        for attempt in plan:
            status = 429 if attempt.backend.name == "primary-1" else 200
            print("attempt %d: %s (%s) -> %d" % (attempt.number, attempt.backend.name,
                                                  attempt.upstream_model, status))
            outcome = plan.report(status=status, latency_ms=120,
                                  headers={"retry-after": "30"} if status == 429 else {})
            if not sb.should_fail_over(outcome):
                break
        for step in plan.trace:
            print("trace:", step)
        for state in router.live_states():
            print("state: %s %s" % (state["name"], state["status"].name))

        if upstream is None:
            return 0
        # The proxy engine: routing, the upstream call and failover in one.
        proxy = sb.Proxy(router, cipher)
        body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
        response = proxy.forward("/chat/completions", body)
        print("HTTP %d from %s: %s" % (response.status, response.header("x-switchboard-backend"),
                                       response.text))
        streamed = proxy.forward("/chat/completions", dict(body, stream=True))
        events = 0
        for event in streamed:  # each SSE event as it arrives
            events += 1
            print("event:", event.strip())
        router.flush()
        print("usage records:", len(admin.usage(limit=10).records))
        return 0 if response.status == 200 and events > 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else None))
