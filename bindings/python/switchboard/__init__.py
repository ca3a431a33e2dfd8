"""switchboard: route LLM API requests over pools of upstream accounts.

    import switchboard as sb

    storage = sb.open_sqlite("switchboard.db")      # or sb.memory_storage()
    cipher = sb.KeyCipher.generate()                # or KeyCipher.load("switchboard.key")
    router = sb.Router(storage)
    admin = sb.Admin(storage, router, cipher)
    admin.create_backend({"name": "openai-main", "api_base_url": "https://api.openai.com/v1",
                          "api_key": "sk-...", "model_mappings": {"gpt-4o": "gpt-4o"}})

    plan = router.route("gpt-4o")                   # route yourself...
    for attempt in plan:
        outcome = plan.report(status=200, latency_ms=120)
        if not sb.should_fail_over(outcome):
            break
    print(plan.trace)

    proxy = sb.Proxy(router, cipher)                # ...or let the proxy engine send it
    response = proxy.forward("/chat/completions", {"model": "gpt-4o", "messages": [...]})

See docs/embedding.md.
"""

from ._switchboard import *  # noqa: F401,F403
from ._switchboard import __version__  # noqa: F401
