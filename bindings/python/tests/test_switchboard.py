"""The Python bindings: stores (SQLite, memory, a Storage written in Python),
routing with plans and traces, backend CRUD, and the proxy engine against a
mock upstream served by this very process (so every forward also shows that
the GIL is released while switchboard waits on the network).

Run: PYTHONPATH=<build>/python:tests/embed /usr/bin/python3 -m pytest bindings/python/tests
"""

import hashlib
import json
import os
import subprocess
import sys
import threading

import pytest

import switchboard as sb
from mock_upstream import MockUpstream

SECRET = "sk-python-test-secret-0001"


@pytest.fixture
def mock():
    with MockUpstream() as upstream:
        yield upstream


def backend_body(name, base_url, pool="primary", **extra):
    body = {"name": name, "pool": pool, "api_base_url": base_url, "api_key": SECRET,
            "model_mappings": {"gpt-4o": "gpt-4o-up"}}
    body.update(extra)
    return body


def gateway(storage=None, clock=None):
    storage = storage if storage is not None else sb.memory_storage()
    cipher = sb.KeyCipher.generate()
    router = sb.Router(storage, clock)
    return storage, cipher, router, sb.Admin(storage, router, cipher)


class DictStorage(sb.Storage):
    """A Storage in plain Python dicts: backends, config, states, records."""

    def __init__(self):
        super().__init__()
        self.backends = {}
        self.config = None
        self.events = []
        self.usage = []
        self.writer_threads = set()

    def create_backend(self, backend):
        if backend.id in self.backends:
            raise self._exists("id " + backend.id, "id")
        if any(b.name == backend.name for b in self.backends.values()):
            raise self._exists("name " + backend.name, "name")
        self.backends[backend.id] = backend.copy()

    @staticmethod
    def _exists(what, param):
        error = sb.AlreadyExistsError(what + " is taken")
        error.param = param
        return error

    def get_backend(self, backend_id):
        if backend_id not in self.backends:
            raise sb.NotFoundError("no backend " + backend_id)
        return self.backends[backend_id].copy()

    def get_backend_by_name(self, name):
        for b in self.backends.values():
            if b.name == name:
                return b.copy()
        raise sb.NotFoundError("no backend named " + name)

    def list_backends(self, backend_filter):
        out = [b.copy() for b in self.backends.values()
               if (backend_filter.pool is None or b.pool == backend_filter.pool)
               and (backend_filter.enabled is None or b.enabled == backend_filter.enabled)]
        return sorted(out, key=lambda b: b.name)

    def update_backend(self, backend):
        if backend.id not in self.backends:
            raise sb.NotFoundError("no backend " + backend.id)
        self.backends[backend.id] = backend.copy()

    def delete_backend(self, backend_id):
        if self.backends.pop(backend_id, None) is None:
            raise sb.NotFoundError("no backend " + backend_id)

    def update_backend_states(self, states):
        self.writer_threads.add(threading.get_ident())
        for s in states:
            b = self.backends.get(s.backend_id)
            if b is not None:
                b.status = s.status
                b.cooldown_until = s.cooldown_until
                b.consecutive_429_count = s.consecutive_429_count
                b.consecutive_failures = s.consecutive_failures
                b.last_error = s.last_error

    def append_cooldown_events(self, events):
        self.events.extend(e.copy() for e in events)

    def append_usage(self, records):
        self.usage.extend(r.copy() for r in records)

    def get_config(self):
        return self.config if self.config is not None else sb.Config()

    def put_config(self, config):
        self.config = config


# --- Stores and backend CRUD -------------------------------------------------


def test_sqlite_store_keeps_backends_across_reopen_and_never_returns_the_key(tmp_path):
    path = str(tmp_path / "switchboard.db")
    key = sb.KeyCipher.generate()
    storage = sb.open_sqlite(path)
    with sb.Router(storage) as router:
        admin = sb.Admin(storage, router, key)
        created = admin.create_backend(backend_body("kept", "http://127.0.0.1:9/v1"))
        assert created.api_key_set
        assert created.api_key_hint == "...0001"
        assert SECRET not in created.to_json()
        assert SECRET not in created.api_key_ciphertext
    del storage

    reopened = sb.open_sqlite(path)
    assert [b.name for b in reopened.list_backends()] == ["kept"]
    assert reopened.get_backend(created.id).model_mappings["gpt-4o"].upstream_model == "gpt-4o-up"


def test_admin_errors_carry_codes_and_the_field_at_fault():
    _, _, _, admin = gateway()
    admin.create_backend(backend_body("one", "http://127.0.0.1:9/v1"))
    with pytest.raises(sb.AlreadyExistsError) as taken:
        admin.create_backend(backend_body("one", "http://127.0.0.1:9/v1"))
    assert taken.value.param == "name"
    assert taken.value.code == "ALREADY_EXISTS"
    with pytest.raises(sb.InvalidArgumentError) as bad_url:
        admin.create_backend(backend_body("two", "ftp://example.com"))
    assert bad_url.value.param == "api_base_url"
    with pytest.raises(sb.InvalidArgumentError) as malformed:
        admin.create_backend("{not json")
    assert malformed.value.param == ""
    with pytest.raises(sb.NotFoundError):
        admin.get_backend("bkd_missing")
    assert isinstance(taken.value, sb.Error)


def test_admin_updates_lists_and_deletes_backends():
    _, _, router, admin = gateway()
    a = admin.create_backend(backend_body("a", "http://127.0.0.1:9/v1"))
    admin.create_backend(backend_body("b", "http://127.0.0.1:9/v1", pool="fallback"))
    updated = admin.update_backend(a.id, {"label": "renamed", "enabled": False})
    assert updated.label == "renamed" and not updated.enabled
    assert [b.name for b in admin.list_backends(pool="fallback")] == ["b"]
    assert [b.name for b in admin.list_backends(enabled=False)] == ["a"]
    # The disabled backend is out of routing at once.
    plan = router.route("gpt-4o")
    assert plan.next().backend.name == "b"
    plan.report(status=200)
    admin.delete_backend(a.id)
    with pytest.raises(sb.NotFoundError):
        admin.delete_backend(a.id)
    assert [b.name for b in admin.list_backends()] == ["b"]


def test_admin_client_keys_are_shown_once_and_stored_as_hashes():
    storage, _, _, admin = gateway()
    secret, key = admin.create_client_key({"name": "team-a"})
    assert secret.startswith("sbk_")
    assert key.name == "team-a" and not key.revoked
    assert key.hint == "..." + secret[-4:]
    stored = storage.list_client_keys()
    assert [k.id for k in stored] == [key.id]
    assert hashlib.sha256(secret.encode()).hexdigest() == stored[0].key_hash
    admin.revoke_client_key(key.id)
    assert [k.revoked for k in admin.list_client_keys()] == [True]


# --- A Storage written in Python ---------------------------------------------


def test_python_storage_serves_admin_routing_and_the_background_writer():
    storage = DictStorage()
    _, _, router, admin = gateway(storage)
    admin.create_backend(backend_body("main", "http://127.0.0.1:9/v1"))
    admin.create_backend(backend_body("spare", "http://127.0.0.1:9/v1", pool="fallback"))
    assert sorted(b.name for b in storage.backends.values()) == ["main", "spare"]

    plan = router.route("gpt-4o")
    assert plan.next().backend.name == "main"
    assert plan.report(status=429, headers={"retry-after": "30"}) == sb.OutcomeClass.RATE_LIMITED
    assert plan.next().backend.name == "spare"
    assert plan.report(status=200) == sb.OutcomeClass.SUCCESS
    router.flush()  # the writer thread calls back into Python (it takes the GIL)

    main = storage.get_backend_by_name("main")
    assert main.status == sb.BackendStatus.COOLING
    assert main.consecutive_429_count == 1
    assert [e.backend_name for e in storage.events] == ["main"]
    assert threading.get_ident() not in storage.writer_threads
    router.close()


def test_python_storage_exceptions_become_status_codes():
    class Broken(DictStorage):
        def list_backends(self, backend_filter):
            raise ValueError("disk on fire")

    _, _, _, admin = gateway(DictStorage())
    with pytest.raises(sb.NotFoundError):
        admin.get_backend("bkd_nope")  # DictStorage raised NotFoundError

    broken = Broken()
    with pytest.raises(sb.InternalError) as error:
        sb.Router(broken)  # loading lists the backends
    assert "ValueError" in str(error.value) and "disk on fire" in str(error.value)


def test_python_storage_without_a_method_answers_failed_precondition():
    class Minimal(sb.Storage):
        def __init__(self):
            super().__init__()

    with pytest.raises(sb.FailedPreconditionError) as error:
        Minimal().list_usage()
    assert "list_usage" in str(error.value)


def test_python_storage_without_client_keys_uses_the_cpp_defaults():
    storage = DictStorage()
    assert storage.list_client_keys() == []
    key = sb.ClientKey()
    key.id, key.name, key.key_hash = "key_1", "ci", "0" * 64
    with pytest.raises(sb.FailedPreconditionError):
        storage.create_client_key(key)


# --- Routing -----------------------------------------------------------------


def test_plan_fails_over_on_429_and_the_cooldown_ends_with_the_clock():
    clock = sb.ManualClock()
    _, _, router, admin = gateway(clock=clock)
    admin.create_backend(backend_body("main", "http://127.0.0.1:9/v1"))
    admin.create_backend(backend_body("spare", "http://127.0.0.1:9/v1", pool="fallback"))

    plan = router.route("gpt-4o")
    tried = []
    for attempt in plan:
        tried.append(attempt.backend.name)
        assert attempt.upstream_model == "gpt-4o-up"
        status = 429 if attempt.backend.name == "main" else 200
        if not sb.should_fail_over(plan.report(status=status, headers={"retry-after": "30"})):
            break
    assert tried == ["main", "spare"]
    assert plan.attempts == 2
    assert [(t["backend"], t["decision"], t["status"]) for t in plan.trace] == [
        ("main", "tried", 429), ("spare", "tried", 200)]

    plan = router.route("gpt-4o")
    assert plan.next().backend.name == "spare"
    plan.report(status=200)
    assert plan.trace[0]["decision"] == "skipped_cooling"

    clock.advance(31)
    plan = router.route("gpt-4o")
    assert plan.next().backend.name == "main"
    plan.report(status=200)


def test_route_raises_with_retry_after_when_everything_is_cooling():
    clock = sb.ManualClock()
    _, _, router, admin = gateway(clock=clock)
    admin.create_backend(backend_body("only", "http://127.0.0.1:9/v1"))
    plan = router.route("gpt-4o")
    plan.next()
    plan.report(status=429, headers={"retry-after": "20"})
    with pytest.raises(sb.ResourceExhaustedError) as error:
        router.route("gpt-4o")
    assert error.value.retry_after == 20
    with pytest.raises(sb.NotFoundError):
        router.route("no-such-model")


def test_report_without_an_open_attempt_is_refused():
    _, _, router, admin = gateway()
    admin.create_backend(backend_body("only", "http://127.0.0.1:9/v1"))
    plan = router.route("gpt-4o")
    with pytest.raises(sb.FailedPreconditionError):
        plan.report(status=200)


# --- The proxy engine ----------------------------------------------------------


def test_proxy_fails_over_and_sends_the_decrypted_key_and_upstream_model(mock):
    _, cipher, router, admin = gateway()
    admin.create_backend(backend_body("limited", mock.url + "/r429/v1"))
    admin.create_backend(backend_body("healthy", mock.url + "/v1", pool="fallback"))
    proxy = sb.Proxy(router, cipher)
    response = proxy.forward("/chat/completions",
                             {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]},
                             request_id="req_py_1")
    assert response.status == 200
    assert response.header("X-Switchboard-Backend") == "healthy"
    assert response.header("x-switchboard-attempts") == "2"
    assert response.headers["x-request-id"] == "req_py_1"
    assert not response.streamed
    assert json.loads(response.body)["choices"][0]["message"]["content"] == \
        "mock answer for gpt-4o-up"
    received = mock.received()
    assert [r["path"] for r in received] == ["/r429/v1/chat/completions", "/v1/chat/completions"]
    assert all(r["authorization"] == "Bearer " + SECRET for r in received)
    assert json.loads(received[1]["body"])["model"] == "gpt-4o-up"

    router.flush()
    usage = admin.usage(limit=10).records
    assert [u.request_id for u in usage] == ["req_py_1"]
    assert [t["backend"] for t in json.loads(usage[0].trace)] == ["limited", "healthy"]


def test_proxy_stream_is_an_iterator_over_sse_events(mock):
    _, cipher, router, admin = gateway()
    admin.create_backend(backend_body("up", mock.url + "/v1"))
    proxy = sb.Proxy(router, cipher)
    response = proxy.forward("/chat/completions",
                             {"model": "gpt-4o", "stream": True, "messages": []})
    assert response.status == 200 and response.streamed
    events = list(response)
    assert len(events) == 5
    assert all(e.startswith("data: ") and e.endswith("\n\n") for e in events)
    assert events[-1] == "data: [DONE]\n\n"
    text = "".join(json.loads(e[6:])["choices"][0]["delta"]["content"]
                   for e in events[:3])
    assert text == "mock answer for gpt-4o-up"
    assert list(response) == []  # exhausted


def test_closing_a_stream_early_ends_it(mock):
    _, cipher, router, admin = gateway()
    admin.create_backend(backend_body("up", mock.url + "/v1"))
    proxy = sb.Proxy(router, cipher)
    with proxy.forward("/chat/completions", {"model": "gpt-4o", "stream": True}) as response:
        first = next(response)
        assert first.startswith("data: ")
    assert list(response) == []


def test_proxy_serves_threads_at_once_with_a_python_storage(mock):
    storage = DictStorage()
    _, cipher, router, admin = gateway(storage)
    admin.create_backend(backend_body("up", mock.url + "/v1"))
    proxy = sb.Proxy(router, cipher)
    statuses = []

    def call():
        r = proxy.forward("/chat/completions", {"model": "gpt-4o", "messages": []})
        statuses.append(r.status)

    threads = [threading.Thread(target=call) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [200] * 8
    router.flush()
    assert len(storage.usage) == 8
    assert "switchboard_requests_total" in proxy.metrics()


def test_unknown_model_is_a_404_response_in_openai_shape(mock):
    _, cipher, router, admin = gateway()
    admin.create_backend(backend_body("up", mock.url + "/v1"))
    response = sb.Proxy(router, cipher).forward("/chat/completions", {"model": "nope"})
    assert response.status == 404
    assert json.loads(response.body)["error"]["code"] == "model_not_found"


# --- The example -------------------------------------------------------------------


def test_route_example_runs_against_the_mock(mock):
    examples = os.environ.get("SWITCHBOARD_EXAMPLES_DIR",
                              os.path.join(os.path.dirname(__file__), "..", "..", "..",
                                           "examples"))
    out = subprocess.run([sys.executable, os.path.join(examples, "python", "route.py"), mock.url],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         timeout=60, check=False)
    assert out.returncode == 0, out.stdout
    assert "attempt 2: fallback-1" in out.stdout
    assert "HTTP 200 from fallback-1" in out.stdout
    assert "event: data: [DONE]" in out.stdout
