// The switchboard Python module (switchboard._switchboard, re-exported by the
// `switchboard` package): stores (SQLite, memory, or a Storage written in
// Python), the Router with its plans and traces, the admin service for
// backend CRUD, and the proxy engine with streams as Python iterators.
//
// Threads and the GIL: network I/O (Proxy.forward, reading a stream) and
// waits on the background writer (Router.flush, Router.close) run with the
// GIL released. A Storage written in Python is called from the writer's
// thread too; its trampoline takes the GIL for each call.
//
// Times are integers: Unix milliseconds (UTC).
#include <pybind11/operators.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <chrono>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "switchboard/c_api.h"  // sb_version()
#include "switchboard/switchboard.h"

namespace py = pybind11;
namespace sb = switchboard;

// SystemTime <-> int (Unix milliseconds).
namespace pybind11::detail {
template <>
struct type_caster<sb::SystemTime> {
 public:
  PYBIND11_TYPE_CASTER(sb::SystemTime, const_name("int"));
  bool load(handle src, bool convert) {
    if (!src || !(PyLong_Check(src.ptr()) || (convert && PyFloat_Check(src.ptr())))) return false;
    const long long ms = PyLong_Check(src.ptr())
                             ? PyLong_AsLongLong(src.ptr())
                             : static_cast<long long>(PyFloat_AsDouble(src.ptr()));
    if (PyErr_Occurred()) {
      PyErr_Clear();
      return false;
    }
    value = sb::FromUnixMillis(ms);
    return true;
  }
  static handle cast(const sb::SystemTime& t, return_value_policy, handle) {
    return PyLong_FromLongLong(sb::ToUnixMillis(t));
  }
};
}  // namespace pybind11::detail

namespace {

// --- Errors ------------------------------------------------------------------

// The exception classes, by StatusCode; created once at import and never freed
// (they live as long as the interpreter).
PyObject* g_errors[9] = {};

void CreateErrors(py::module_& m) {
  PyObject* base = PyErr_NewExceptionWithDoc(
      "switchboard.Error",
      "A switchboard call failed. Attributes: code ('NOT_FOUND', ...), param (the input "
      "field at fault, or ''), retry_after (seconds, for ResourceExhaustedError).",
      PyExc_Exception, nullptr);
  m.add_object("Error", py::handle(base));
  const std::pair<sb::StatusCode, const char*> kinds[] = {
      {sb::StatusCode::kInvalidArgument, "InvalidArgumentError"},
      {sb::StatusCode::kNotFound, "NotFoundError"},
      {sb::StatusCode::kAlreadyExists, "AlreadyExistsError"},
      {sb::StatusCode::kFailedPrecondition, "FailedPreconditionError"},
      {sb::StatusCode::kResourceExhausted, "ResourceExhaustedError"},
      {sb::StatusCode::kUnavailable, "UnavailableError"},
      {sb::StatusCode::kDeadlineExceeded, "DeadlineExceededError"},
      {sb::StatusCode::kInternal, "InternalError"},
  };
  g_errors[0] = base;
  for (const auto& [code, name] : kinds) {
    PyObject* cls =
        PyErr_NewException((std::string("switchboard.") + name).c_str(), base, nullptr);
    g_errors[static_cast<int>(code)] = cls;
    m.add_object(name, py::handle(cls));
  }
}

// Raises the Python exception for a failed `status`.
[[noreturn]] void Raise(const sb::Status& status,
                        std::optional<sb::Duration> retry_after = std::nullopt) {
  py::handle cls(g_errors[static_cast<int>(status.code())]);
  py::object error = cls(status.message());
  error.attr("code") = std::string(sb::StatusCodeName(status.code()));
  error.attr("param") = status.param();
  if (retry_after) {
    error.attr("retry_after") = std::chrono::duration<double>(*retry_after).count();
  } else {
    error.attr("retry_after") = py::none();
  }
  PyErr_SetObject(cls.ptr(), error.ptr());
  throw py::error_already_set();
}

// The one place a Status becomes a Python exception.
void Unwrap(const sb::Status& status) {
  if (!status.ok()) Raise(status);
}
template <typename T>
T Unwrap(sb::Result<T> result) {
  if (!result.ok()) Raise(result.status());
  return *std::move(result);
}

// A Python exception raised by a Storage written in Python, as a Status: a
// switchboard.Error keeps its code and param, anything else is kInternal.
// REQUIRES: the GIL is held.
sb::Status StatusFromPython(py::error_already_set& e) {
  std::string message = py::str(e.value());
  if (e.matches(py::handle(g_errors[0]))) {
    for (int code = 1; code < 9; ++code) {
      if (g_errors[code] != nullptr && e.matches(py::handle(g_errors[code]))) {
        std::string param;
        if (py::hasattr(e.value(), "param") && !e.value().attr("param").is_none()) {
          param = py::str(e.value().attr("param"));
        }
        return sb::Status(static_cast<sb::StatusCode>(code), message, param);
      }
    }
  }
  return sb::InternalError("Python storage raised " +
                           std::string(py::str(e.type().attr("__name__"))) + ": " + message);
}

// --- A Storage written in Python ------------------------------------------------

// The trampoline: each virtual calls the Python method of the same name
// (snake_case). A method the subclass does not define answers
// kFailedPrecondition ("not implemented"), so a store used only for routing
// needs only the methods routing uses.
class PyStorage : public sb::Storage {
 public:
  using sb::Storage::Storage;

  sb::Status CreateBackend(const sb::Backend& b) override { return Call("create_backend", b); }
  sb::Result<sb::Backend> GetBackend(const std::string& id) override {
    return CallFor<sb::Backend>("get_backend", id);
  }
  sb::Result<sb::Backend> GetBackendByName(const std::string& name) override {
    return CallFor<sb::Backend>("get_backend_by_name", name);
  }
  sb::Result<std::vector<sb::Backend>> ListBackends(const sb::BackendFilter& filter) override {
    return CallFor<std::vector<sb::Backend>>("list_backends", filter);
  }
  sb::Status UpdateBackend(const sb::Backend& b) override { return Call("update_backend", b); }
  sb::Status DeleteBackend(const std::string& id) override { return Call("delete_backend", id); }
  sb::Status UpdateBackendStates(const std::vector<sb::BackendState>& states) override {
    return Call("update_backend_states", states);
  }
  sb::Status ReplaceApiKeys(const std::vector<sb::ApiKeyUpdate>& updates) override {
    return Call("replace_api_keys", updates);
  }
  sb::Status AppendCooldownEvents(const std::vector<sb::CooldownEvent>& events) override {
    return Call("append_cooldown_events", events);
  }
  sb::Result<std::vector<sb::CooldownEvent>> ListCooldownEvents(
      const sb::CooldownEventQuery& query) override {
    return CallFor<std::vector<sb::CooldownEvent>>("list_cooldown_events", query);
  }
  sb::Status AppendUsage(const std::vector<sb::UsageRecord>& records) override {
    return Call("append_usage", records);
  }
  sb::Result<sb::UsagePage> ListUsage(const sb::UsageQuery& query) override {
    return CallFor<sb::UsagePage>("list_usage", query);
  }
  sb::Result<sb::UsageStats> QueryUsageStats(const sb::StatsQuery& query) override {
    return CallFor<sb::UsageStats>("query_usage_stats", query);
  }
  sb::Result<int64_t> DeleteUsageBefore(sb::SystemTime cutoff) override {
    return CallFor<int64_t>("delete_usage_before", cutoff);
  }
  sb::Result<sb::Config> GetConfig() override { return CallFor<sb::Config>("get_config"); }
  sb::Status PutConfig(const sb::Config& config) override { return Call("put_config", config); }
  // Methods with a C++ default use it when the subclass does not define them.
  sb::Result<std::vector<sb::PoolStats>> GetPoolStats(sb::SystemTime now) override {
    if (!Overrides("get_pool_stats")) return sb::Storage::GetPoolStats(now);
    return CallFor<std::vector<sb::PoolStats>>("get_pool_stats", now);
  }
  sb::Status CreateClientKey(const sb::ClientKey& key) override {
    if (!Overrides("create_client_key")) return sb::Storage::CreateClientKey(key);
    return Call("create_client_key", key);
  }
  sb::Result<std::vector<sb::ClientKey>> ListClientKeys() override {
    if (!Overrides("list_client_keys")) return sb::Storage::ListClientKeys();
    return CallFor<std::vector<sb::ClientKey>>("list_client_keys");
  }
  sb::Status RevokeClientKey(const std::string& id, sb::SystemTime when) override {
    if (!Overrides("revoke_client_key")) return sb::Storage::RevokeClientKey(id, when);
    return Call("revoke_client_key", id, when);
  }
  sb::Status TouchClientKeys(const std::vector<sb::ClientKeyUse>& uses) override {
    if (!Overrides("touch_client_keys")) return sb::Storage::TouchClientKeys(uses);
    return Call("touch_client_keys", uses);
  }

 private:
  bool Overrides(const char* name) const {
    py::gil_scoped_acquire gil;
    return static_cast<bool>(py::get_override(static_cast<const sb::Storage*>(this), name));
  }

  static sb::Status NotImplemented(const char* name) {
    return sb::FailedPreconditionError(std::string("this Storage does not implement ") + name);
  }

  template <typename... Args>
  sb::Status Call(const char* name, const Args&... args) {
    py::gil_scoped_acquire gil;
    try {
      py::function f = py::get_override(static_cast<const sb::Storage*>(this), name);
      if (!f) return NotImplemented(name);
      f(args...);
      return sb::Status::Ok();
    } catch (py::error_already_set& e) {
      return StatusFromPython(e);
    } catch (const std::exception& e) {
      return sb::InternalError(std::string(name) + ": " + e.what());
    }
  }

  template <typename T, typename... Args>
  sb::Result<T> CallFor(const char* name, const Args&... args) {
    py::gil_scoped_acquire gil;
    try {
      py::function f = py::get_override(static_cast<const sb::Storage*>(this), name);
      if (!f) return NotImplemented(name);
      return f(args...).template cast<T>();
    } catch (py::error_already_set& e) {
      return StatusFromPython(e);
    } catch (const py::cast_error& e) {
      return sb::InternalError(std::string(name) + " returned the wrong type: " + e.what());
    } catch (const std::exception& e) {
      return sb::InternalError(std::string(name) + ": " + e.what());
    }
  }
};

// --- Router, plans ---------------------------------------------------------------

// A Router over a Storage, with the StorageWriter that persists its state.
class PyRouter {
 public:
  PyRouter(sb::Storage& storage, const sb::Clock* clock)
      : storage_(storage),
        writer_(std::make_unique<sb::StorageWriter>(storage)),
        router_(std::make_unique<sb::Router>(clock ? *clock : sb::Clock::Real(), writer_.get())) {
  }
  ~PyRouter() { Close(); }

  sb::Router& router() {
    if (!router_) Raise(sb::FailedPreconditionError("the router is closed"));
    return *router_;
  }
  sb::StorageWriter* writer() { return writer_.get(); }
  sb::Storage& storage() { return storage_; }

  void Flush() {
    if (!writer_) return;
    sb::Status s;
    {
      py::gil_scoped_release release;
      s = writer_->Flush();
    }
    Unwrap(s);
  }

  // Writes what is pending and stops the writer's thread. The GIL is released
  // meanwhile: a Storage written in Python needs it on that thread.
  void Close() {
    if (!writer_) return;
    router_.reset();
    if (Py_IsInitialized() && PyGILState_Check()) {
      py::gil_scoped_release release;
      writer_.reset();
    } else {
      writer_.reset();
    }
  }

 private:
  sb::Storage& storage_;
  std::unique_ptr<sb::StorageWriter> writer_;
  std::unique_ptr<sb::Router> router_;
};

struct PyAttempt {
  sb::Backend backend;
  std::string upstream_model;
  int number = 0;
  bool half_open = false;
};

class PyPlan {
 public:
  explicit PyPlan(sb::RoutePlan plan) : plan_(std::move(plan)) {}

  std::optional<PyAttempt> Next() {
    if (open_) Raise(sb::FailedPreconditionError("report() the previous attempt first"));
    const sb::PlannedAttempt* a = plan_.Next();
    if (a == nullptr) return std::nullopt;
    open_ = true;
    return PyAttempt{a->backend(), a->upstream_model(), a->number(), a->half_open()};
  }

  sb::OutcomeClass Report(int status, sb::TransportError transport_error, double latency_ms,
                          double ttfb_ms, int64_t prompt_tokens, int64_t completion_tokens,
                          const std::map<std::string, std::string>& headers) {
    if (!open_) Raise(sb::FailedPreconditionError("no attempt to report: call next() first"));
    sb::AttemptOutcome o;
    o.http_status = status;
    o.transport_error = transport_error;
    o.latency = std::chrono::duration_cast<sb::Duration>(
        std::chrono::duration<double, std::milli>(latency_ms));
    o.ttfb = std::chrono::duration_cast<sb::Duration>(
        std::chrono::duration<double, std::milli>(ttfb_ms));
    o.prompt_tokens = prompt_tokens;
    o.completion_tokens = completion_tokens;
    for (const auto& [name, value] : headers) o.headers.emplace_back(name, value);
    open_ = false;
    return plan_.Report(o);
  }

  const sb::RoutePlan& plan() const { return plan_; }

 private:
  sb::RoutePlan plan_;
  bool open_ = false;
};

// --- Proxy -----------------------------------------------------------------------

class PyProxy {
 public:
  PyProxy(PyRouter& router, const sb::KeyCipher* cipher, sb::ProxyOptions options) {
    upstream_ = Unwrap(sb::NewCurlUpstreamClient({}));
    metrics_ = std::make_unique<sb::Metrics>();
    proxy_ = std::make_unique<sb::Proxy>(router.router(), *upstream_, cipher, router.writer(),
                                         sb::Clock::Real(), options, metrics_.get());
    router_ = &router.router();
  }

  sb::Proxy& proxy() { return *proxy_; }
  std::string Metrics() const { return metrics_->RenderPrometheus(*router_); }

 private:
  std::unique_ptr<sb::UpstreamClient> upstream_;
  std::unique_ptr<sb::Metrics> metrics_;
  std::unique_ptr<sb::Proxy> proxy_;
  const sb::Router* router_ = nullptr;
};

// A response; a streamed one is also an iterator over its SSE events (str).
class PyResponse {
 public:
  explicit PyResponse(sb::ProxyResponse r)
      : status_(r.status),
        headers_(std::move(r.headers)),
        body_(std::move(r.body)),
        stream_(std::move(r.stream)),
        streamed_(stream_ != nullptr) {}

  int status() const { return status_; }
  py::dict headers() const {
    py::dict out;
    for (const auto& [name, value] : headers_) out[py::str(name)] = value;
    return out;
  }
  std::optional<std::string> header(const std::string& name) const {
    const std::string* v = sb::FindHeader(headers_, name);
    if (v == nullptr) return std::nullopt;
    return *v;
  }
  py::bytes body() const { return py::bytes(body_); }
  std::string text() const { return body_; }
  bool streamed() const { return streamed_; }

  // The next whole SSE event; raises StopIteration at the end.
  std::string NextEvent() {
    while (events_.empty()) {
      if (!stream_) throw py::stop_iteration();
      std::string chunk;
      bool more = false;
      {
        py::gil_scoped_release release;
        more = stream_->Next(&chunk);
      }
      std::vector<std::string> events;
      parser_.Feed(chunk, &events);
      for (std::string& e : events) events_.push_back(std::move(e));
      if (!more) {
        if (!parser_.pending().empty()) events_.push_back(parser_.pending());
        DropStream();
      }
    }
    std::string event = std::move(events_.front());
    events_.pop_front();
    return event;
  }

  // Stops reading: events not yet taken are dropped and the upstream
  // transfer is aborted.
  void Close() {
    events_.clear();
    DropStream();
  }

 private:
  void DropStream() {
    if (!stream_) return;
    py::gil_scoped_release release;
    stream_.reset();
  }

  int status_;
  sb::Headers headers_;
  std::string body_;
  std::unique_ptr<sb::ProxyStream> stream_;
  bool streamed_;
  sb::SseParser parser_;
  std::deque<std::string> events_;
};

// JSON text from a str, bytes or anything json.dumps takes (a dict).
std::string JsonText(const py::object& value) {
  if (py::isinstance<py::str>(value)) return value.cast<std::string>();
  if (py::isinstance<py::bytes>(value)) return value.cast<std::string>();
  return py::module_::import("json").attr("dumps")(value).cast<std::string>();
}

std::string Repr(const sb::Backend& b) {
  return "<Backend " + b.name + " pool=" + b.pool + " status=" +
         std::string(sb::BackendStatusName(b.status)) + ">";
}

}  // namespace

PYBIND11_MODULE(_switchboard, m) {
  m.doc() = "switchboard: route LLM API requests over pools of upstream accounts";
  m.attr("__version__") = sb_version();
  CreateErrors(m);

  // --- Enums and plain values ----------------------------------------------
  py::enum_<sb::Api>(m, "Api").value("OPENAI", sb::Api::kOpenAI).value("ANTHROPIC", sb::Api::kAnthropic);
  py::enum_<sb::BackendStatus>(m, "BackendStatus")
      .value("HEALTHY", sb::BackendStatus::kHealthy)
      .value("COOLING", sb::BackendStatus::kCooling)
      .value("ERROR", sb::BackendStatus::kError)
      .value("DISABLED", sb::BackendStatus::kDisabled);
  py::enum_<sb::BackendSource>(m, "BackendSource")
      .value("MANUAL", sb::BackendSource::kManual)
      .value("IMPORT", sb::BackendSource::kImport)
      .value("DEMO", sb::BackendSource::kDemo);
  py::enum_<sb::Strategy>(m, "Strategy")
      .value("ROUND_ROBIN", sb::Strategy::kRoundRobin)
      .value("WEIGHTED", sb::Strategy::kWeighted)
      .value("LEAST_BUSY", sb::Strategy::kLeastBusy)
      .value("LOWEST_LATENCY", sb::Strategy::kLowestLatency);
  py::enum_<sb::OutcomeClass>(m, "OutcomeClass")
      .value("SUCCESS", sb::OutcomeClass::kSuccess)
      .value("RATE_LIMITED", sb::OutcomeClass::kRateLimited)
      .value("FAILURE", sb::OutcomeClass::kFailure)
      .value("AUTH_ERROR", sb::OutcomeClass::kAuthError)
      .value("CLIENT_ERROR", sb::OutcomeClass::kClientError)
      .value("CANCELLED", sb::OutcomeClass::kCancelled);
  py::enum_<sb::TransportError>(m, "TransportError")
      .value("NONE", sb::TransportError::kNone)
      .value("CONNECT", sb::TransportError::kConnect)
      .value("TIMEOUT", sb::TransportError::kTimeout)
      .value("RESET", sb::TransportError::kReset)
      .value("PROTOCOL", sb::TransportError::kProtocol)
      .value("CANCELLED", sb::TransportError::kCancelled);
  m.def("should_fail_over", &sb::ShouldFailOver, py::arg("outcome"),
        "Whether a request may move on to another backend after this outcome.");
  m.def("new_backend_id", &sb::NewBackendId);
  m.def("api_key_hint", &sb::ApiKeyHint, py::arg("api_key"));

  py::class_<sb::ModelMapping>(m, "ModelMapping")
      .def(py::init<>())
      .def(py::init([](std::string upstream_model, int weight) {
             return sb::ModelMapping{std::move(upstream_model), weight};
           }),
           py::arg("upstream_model"), py::arg("weight") = 1)
      .def_readwrite("upstream_model", &sb::ModelMapping::upstream_model)
      .def_readwrite("weight", &sb::ModelMapping::weight)
      .def(py::self == py::self);

  py::class_<sb::Backend>(m, "Backend",
                          "One upstream account. model_mappings is returned as a copy: assign "
                          "a whole dict to change it. Times are Unix milliseconds.")
      .def(py::init<>())
      .def_readwrite("id", &sb::Backend::id)
      .def_readwrite("name", &sb::Backend::name)
      .def_readwrite("label", &sb::Backend::label)
      .def_readwrite("api_base_url", &sb::Backend::api_base_url)
      .def_readwrite("api", &sb::Backend::api)
      .def_readwrite("timeout_seconds", &sb::Backend::timeout_seconds)
      .def_readwrite("rpm_limit", &sb::Backend::rpm_limit)
      .def_readwrite("tpm_limit", &sb::Backend::tpm_limit)
      .def_readwrite("max_concurrency", &sb::Backend::max_concurrency)
      .def_readwrite("pool", &sb::Backend::pool)
      .def_readwrite("enabled", &sb::Backend::enabled)
      .def_readwrite("status", &sb::Backend::status)
      .def_readwrite("model_mappings", &sb::Backend::model_mappings)
      .def_readwrite("source", &sb::Backend::source)
      .def_readwrite("cooldown_until", &sb::Backend::cooldown_until)
      .def_readwrite("consecutive_429_count", &sb::Backend::consecutive_429_count)
      .def_readwrite("consecutive_failures", &sb::Backend::consecutive_failures)
      .def_readwrite("last_error", &sb::Backend::last_error)
      .def_readwrite("metadata", &sb::Backend::metadata)
      .def_readwrite("created_at", &sb::Backend::created_at)
      .def_readwrite("updated_at", &sb::Backend::updated_at)
      .def_readwrite("api_key_ciphertext", &sb::Backend::api_key_ciphertext)
      .def_readwrite("api_key_hint", &sb::Backend::api_key_hint)
      .def_property_readonly("api_key_set", &sb::Backend::api_key_set)
      .def("to_json", &sb::BackendToJson, "The admin API's wire form (never the key).")
      .def("copy", [](const sb::Backend& b) { return b; })
      .def("__copy__", [](const sb::Backend& b) { return b; })
      .def("__deepcopy__", [](const sb::Backend& b, py::dict) { return b; })
      .def("__repr__", &Repr)
      .def(py::self == py::self);
  m.def("validate_backend", [](const sb::Backend& b) {
    std::vector<std::pair<std::string, std::string>> out;
    for (const sb::FieldError& e : sb::ValidateBackend(b)) out.emplace_back(e.param, e.message);
    return out;
  }, "The invalid fields of a backend as (param, message) pairs; empty when valid.");

  py::class_<sb::BackendState>(m, "BackendState")
      .def(py::init<>())
      .def_readwrite("backend_id", &sb::BackendState::backend_id)
      .def_readwrite("status", &sb::BackendState::status)
      .def_readwrite("cooldown_until", &sb::BackendState::cooldown_until)
      .def_readwrite("consecutive_429_count", &sb::BackendState::consecutive_429_count)
      .def_readwrite("consecutive_failures", &sb::BackendState::consecutive_failures)
      .def_readwrite("last_error", &sb::BackendState::last_error);

  py::class_<sb::ApiKeyUpdate>(m, "ApiKeyUpdate")
      .def(py::init<>())
      .def_readwrite("backend_id", &sb::ApiKeyUpdate::backend_id)
      .def_readwrite("api_key_ciphertext", &sb::ApiKeyUpdate::api_key_ciphertext);

  py::class_<sb::CooldownEvent>(m, "CooldownEvent")
      .def(py::init<>())
      .def_readwrite("id", &sb::CooldownEvent::id)
      .def_readwrite("backend_id", &sb::CooldownEvent::backend_id)
      .def_readwrite("backend_name", &sb::CooldownEvent::backend_name)
      .def_readwrite("start", &sb::CooldownEvent::start)
      .def_readwrite("until", &sb::CooldownEvent::until)
      .def_readwrite("reason", &sb::CooldownEvent::reason)
      .def_readwrite("upstream_status", &sb::CooldownEvent::upstream_status)
      .def("copy", [](const sb::CooldownEvent& e) { return e; });

  py::class_<sb::UsageRecord>(m, "UsageRecord")
      .def(py::init<>())
      .def_readwrite("id", &sb::UsageRecord::id)
      .def_readwrite("request_id", &sb::UsageRecord::request_id)
      .def_readwrite("time", &sb::UsageRecord::time)
      .def_readwrite("endpoint", &sb::UsageRecord::endpoint)
      .def_readwrite("model", &sb::UsageRecord::model)
      .def_readwrite("backend_id", &sb::UsageRecord::backend_id)
      .def_readwrite("backend_name", &sb::UsageRecord::backend_name)
      .def_readwrite("pool", &sb::UsageRecord::pool)
      .def_readwrite("status", &sb::UsageRecord::status)
      .def_readwrite("attempts", &sb::UsageRecord::attempts)
      .def_readwrite("latency_ms", &sb::UsageRecord::latency_ms)
      .def_readwrite("ttfb_ms", &sb::UsageRecord::ttfb_ms)
      .def_readwrite("prompt_tokens", &sb::UsageRecord::prompt_tokens)
      .def_readwrite("completion_tokens", &sb::UsageRecord::completion_tokens)
      .def_readwrite("stream", &sb::UsageRecord::stream)
      .def_readwrite("error", &sb::UsageRecord::error)
      .def_readwrite("trace", &sb::UsageRecord::trace)
      .def("copy", [](const sb::UsageRecord& r) { return r; })
      .def("to_json", &sb::UsageRecordToJson);

  py::class_<sb::Config>(m, "Config")
      .def(py::init<>())
      .def_readwrite("pool_order", &sb::Config::pool_order)
      .def_readwrite("strategy", &sb::Config::strategy)
      .def_readwrite("max_attempts", &sb::Config::max_attempts)
      .def_readwrite("cooldown_base_seconds", &sb::Config::cooldown_base_seconds)
      .def_readwrite("cooldown_max_seconds", &sb::Config::cooldown_max_seconds)
      .def_readwrite("error_threshold", &sb::Config::error_threshold)
      .def_readwrite("body_limit_bytes", &sb::Config::body_limit_bytes)
      .def_readwrite("usage_retention_days", &sb::Config::usage_retention_days)
      .def("to_json", &sb::ConfigToJson)
      .def(py::self == py::self);

  py::class_<sb::BackendFilter>(m, "BackendFilter")
      .def(py::init<>())
      .def_readwrite("pool", &sb::BackendFilter::pool)
      .def_readwrite("enabled", &sb::BackendFilter::enabled);
  py::class_<sb::CooldownEventQuery>(m, "CooldownEventQuery")
      .def(py::init<>())
      .def_readwrite("limit", &sb::CooldownEventQuery::limit)
      .def_readwrite("backend_id", &sb::CooldownEventQuery::backend_id);
  py::class_<sb::UsageQuery>(m, "UsageQuery")
      .def(py::init<>())
      .def_readwrite("limit", &sb::UsageQuery::limit)
      .def_readwrite("before", &sb::UsageQuery::before);
  py::class_<sb::UsagePage>(m, "UsagePage")
      .def(py::init<>())
      .def(py::init([](std::vector<sb::UsageRecord> records, std::optional<int64_t> next_before) {
             return sb::UsagePage{std::move(records), next_before};
           }),
           py::arg("records"), py::arg("next_before") = py::none())
      .def_readwrite("records", &sb::UsagePage::records)
      .def_readwrite("next_before", &sb::UsagePage::next_before);
  py::class_<sb::StatsQuery>(m, "StatsQuery")
      .def(py::init<>())
      .def_readwrite("from_", &sb::StatsQuery::from)
      .def_readwrite("to", &sb::StatsQuery::to)
      .def_readwrite("bucket_seconds", &sb::StatsQuery::bucket_seconds);
  py::class_<sb::UsageAggregate>(m, "UsageAggregate")
      .def(py::init<>())
      .def_readwrite("requests", &sb::UsageAggregate::requests)
      .def_readwrite("errors", &sb::UsageAggregate::errors)
      .def_readwrite("rate_limited", &sb::UsageAggregate::rate_limited)
      .def_readwrite("prompt_tokens", &sb::UsageAggregate::prompt_tokens)
      .def_readwrite("completion_tokens", &sb::UsageAggregate::completion_tokens)
      .def_readwrite("p50_ms", &sb::UsageAggregate::p50_ms)
      .def_readwrite("p95_ms", &sb::UsageAggregate::p95_ms)
      .def_readwrite("upstream_429", &sb::UsageAggregate::upstream_429);
  py::class_<sb::UsageStats>(m, "UsageStats")
      .def(py::init<>())
      .def_readwrite("totals", &sb::UsageStats::totals);
  py::class_<sb::PoolStats>(m, "PoolStats")
      .def(py::init<>())
      .def_readwrite("pool", &sb::PoolStats::pool)
      .def_readwrite("priority", &sb::PoolStats::priority)
      .def_readwrite("total", &sb::PoolStats::total)
      .def_readwrite("enabled", &sb::PoolStats::enabled)
      .def_readwrite("healthy", &sb::PoolStats::healthy)
      .def_readwrite("cooling", &sb::PoolStats::cooling)
      .def_readwrite("error", &sb::PoolStats::error);

  py::class_<sb::ClientKey>(m, "ClientKey", "A client key as stored: its SHA-256, never the key.")
      .def(py::init<>())
      .def_readwrite("id", &sb::ClientKey::id)
      .def_readwrite("name", &sb::ClientKey::name)
      .def_readwrite("key_hash", &sb::ClientKey::key_hash)
      .def_readwrite("hint", &sb::ClientKey::hint)
      .def_readwrite("metadata", &sb::ClientKey::metadata)
      .def_readwrite("created_at", &sb::ClientKey::created_at)
      .def_readwrite("last_used_at", &sb::ClientKey::last_used_at)
      .def_readwrite("revoked_at", &sb::ClientKey::revoked_at)
      .def_property_readonly("revoked", &sb::ClientKey::revoked)
      .def("copy", [](const sb::ClientKey& k) { return k; });
  py::class_<sb::ClientKeyUse>(m, "ClientKeyUse")
      .def(py::init<>())
      .def_readwrite("key_id", &sb::ClientKeyUse::key_id)
      .def_readwrite("used_at", &sb::ClientKeyUse::used_at);

  // --- Clocks and keys ---------------------------------------------------------
  py::class_<sb::Clock>(m, "Clock").def_static(
      "real", []() -> const sb::Clock& { return sb::Clock::Real(); },
      py::return_value_policy::reference);
  py::class_<sb::ManualClock, sb::Clock>(m, "ManualClock",
                                         "A clock that moves only when told to (tests).")
      .def(py::init<>())
      .def(py::init([](int64_t wall_start_ms) {
             return std::make_unique<sb::ManualClock>(sb::FromUnixMillis(wall_start_ms));
           }),
           py::arg("wall_start_ms"))
      .def("advance",
           [](sb::ManualClock& c, double seconds) {
             if (seconds < 0) Raise(sb::InvalidArgumentError("seconds must be >= 0"));
             c.Advance(std::chrono::duration_cast<sb::Duration>(
                 std::chrono::duration<double>(seconds)));
           },
           py::arg("seconds"))
      .def("wall_now_ms", [](const sb::ManualClock& c) { return sb::ToUnixMillis(c.WallNow()); });

  py::class_<sb::KeyCipher>(m, "KeyCipher",
                            "Encrypts backends' API keys under a master key (AES-256-GCM).")
      .def_static("generate",
                  []() {
                    Unwrap(sb::InitCrypto());
                    return Unwrap(sb::KeyCipher::Create(Unwrap(sb::MasterKey::Generate())));
                  },
                  "A cipher under a fresh random master key.")
      .def_static("from_base64",
                  [](const std::string& key) {
                    Unwrap(sb::InitCrypto());
                    return Unwrap(sb::KeyCipher::Create(Unwrap(sb::MasterKey::FromBase64(key))));
                  },
                  py::arg("key"), "A cipher under a base64 master key (32 bytes).")
      .def_static("load",
                  [](const std::string& key_file, const std::string& env_var) {
                    Unwrap(sb::InitCrypto());
                    sb::MasterKeyOptions o;
                    o.key_file = key_file;
                    o.env_var = env_var;
                    return Unwrap(sb::KeyCipher::Create(Unwrap(sb::LoadMasterKey(o))));
                  },
                  py::arg("key_file"), py::arg("env_var") = "SWITCHBOARD_MASTER_KEY",
                  "The key from $env_var, else key_file (created with mode 0600).")
      .def_property_readonly("key_id", &sb::KeyCipher::key_id);

  // --- Storage -------------------------------------------------------------------
  py::class_<sb::Storage, PyStorage>(
      m, "Storage",
      "Where backends, config, cooldown events and usage live. Subclass it in Python "
      "(call super().__init__()) and implement the snake_case methods; raise "
      "switchboard.NotFoundError / AlreadyExistsError(msg) with .param set as the C++ "
      "contract says. Methods a subclass leaves out answer FailedPreconditionError.")
      .def(py::init<>())
      .def("create_backend", [](sb::Storage& s, const sb::Backend& b) { Unwrap(s.CreateBackend(b)); })
      .def("get_backend", [](sb::Storage& s, const std::string& id) { return Unwrap(s.GetBackend(id)); })
      .def("get_backend_by_name",
           [](sb::Storage& s, const std::string& n) { return Unwrap(s.GetBackendByName(n)); })
      .def("list_backends",
           [](sb::Storage& s, const sb::BackendFilter& f) { return Unwrap(s.ListBackends(f)); },
           py::arg("filter") = sb::BackendFilter{})
      .def("update_backend", [](sb::Storage& s, const sb::Backend& b) { Unwrap(s.UpdateBackend(b)); })
      .def("delete_backend", [](sb::Storage& s, const std::string& id) { Unwrap(s.DeleteBackend(id)); })
      .def("update_backend_states",
           [](sb::Storage& s, const std::vector<sb::BackendState>& v) {
             Unwrap(s.UpdateBackendStates(v));
           })
      .def("replace_api_keys",
           [](sb::Storage& s, const std::vector<sb::ApiKeyUpdate>& v) { Unwrap(s.ReplaceApiKeys(v)); })
      .def("append_cooldown_events",
           [](sb::Storage& s, const std::vector<sb::CooldownEvent>& v) {
             Unwrap(s.AppendCooldownEvents(v));
           })
      .def("list_cooldown_events",
           [](sb::Storage& s, const sb::CooldownEventQuery& q) {
             return Unwrap(s.ListCooldownEvents(q));
           },
           py::arg("query") = sb::CooldownEventQuery{})
      .def("append_usage",
           [](sb::Storage& s, const std::vector<sb::UsageRecord>& v) { Unwrap(s.AppendUsage(v)); })
      .def("list_usage",
           [](sb::Storage& s, const sb::UsageQuery& q) { return Unwrap(s.ListUsage(q)); },
           py::arg("query") = sb::UsageQuery{})
      .def("query_usage_stats",
           [](sb::Storage& s, const sb::StatsQuery& q) { return Unwrap(s.QueryUsageStats(q)); })
      .def("delete_usage_before",
           [](sb::Storage& s, sb::SystemTime t) { return Unwrap(s.DeleteUsageBefore(t)); })
      .def("get_config", [](sb::Storage& s) { return Unwrap(s.GetConfig()); })
      .def("put_config", [](sb::Storage& s, const sb::Config& c) { Unwrap(s.PutConfig(c)); })
      .def("get_pool_stats",
           [](sb::Storage& s, sb::SystemTime now) { return Unwrap(s.GetPoolStats(now)); })
      .def("create_client_key",
           [](sb::Storage& s, const sb::ClientKey& k) { Unwrap(s.CreateClientKey(k)); })
      .def("list_client_keys", [](sb::Storage& s) { return Unwrap(s.ListClientKeys()); })
      .def("revoke_client_key",
           [](sb::Storage& s, const std::string& id, sb::SystemTime when) {
             Unwrap(s.RevokeClientKey(id, when));
           })
      .def("touch_client_keys", [](sb::Storage& s, const std::vector<sb::ClientKeyUse>& uses) {
        Unwrap(s.TouchClientKeys(uses));
      });

  m.def("open_sqlite",
        [](const std::string& path, int busy_timeout_ms) {
          return Unwrap(sb::OpenSqliteStorage({.path = path, .busy_timeout_ms = busy_timeout_ms}));
        },
        py::arg("path"), py::arg("busy_timeout_ms") = 5000,
        "Opens (creating and migrating) a SQLite store; ':memory:' for a private one.");
  m.def("memory_storage", &sb::NewMemoryStorage, "A store whose contents die with it.");

  // --- Router ----------------------------------------------------------------------
  py::class_<PyAttempt>(m, "Attempt")
      .def_readonly("backend", &PyAttempt::backend)
      .def_readonly("upstream_model", &PyAttempt::upstream_model)
      .def_readonly("number", &PyAttempt::number)
      .def_readonly("half_open", &PyAttempt::half_open)
      .def("__repr__", [](const PyAttempt& a) {
        return "<Attempt " + std::to_string(a.number) + " " + a.backend.name + ">";
      });

  py::class_<PyPlan>(m, "Plan",
                     "The attempts for one request. Take one with next() (or iterate), send "
                     "it, report() its outcome, and go on while should_fail_over() holds.")
      .def("next", &PyPlan::Next, "The next Attempt, or None when the plan is done.")
      .def("__iter__", [](py::object self) { return self; })
      .def("__next__",
           [](PyPlan& p) {
             std::optional<PyAttempt> a = p.Next();
             if (!a) throw py::stop_iteration();
             return *a;
           })
      .def("report", &PyPlan::Report, py::arg("status") = 0,
           py::arg("transport_error") = sb::TransportError::kNone, py::arg("latency_ms") = 0.0,
           py::arg("ttfb_ms") = 0.0, py::arg("prompt_tokens") = 0,
           py::arg("completion_tokens") = 0,
           py::arg("headers") = std::map<std::string, std::string>{},
           "Records the open attempt's outcome (an HTTP status, or 0 with a transport "
           "error; the upstream's headers such as retry-after) and returns its OutcomeClass.")
      .def_property_readonly("attempts", [](const PyPlan& p) { return p.plan().attempts(); })
      .def_property_readonly("model", [](const PyPlan& p) { return p.plan().model(); })
      .def("trace_json", [](const PyPlan& p) { return p.plan().TraceJson(); })
      .def_property_readonly(
          "trace",
          [](const PyPlan& p) {
            return py::module_::import("json").attr("loads")(p.plan().TraceJson());
          },
          "The decision trace: a list of dicts, one per backend examined, tried or skipped "
          "and why.");

  py::class_<PyRouter>(m, "Router",
                       "Routes canonical model names to backends. Owns a background writer "
                       "that persists cooldowns and usage to the storage.")
      .def(py::init([](sb::Storage& storage, const sb::Clock* clock) {
             auto r = std::make_unique<PyRouter>(storage, clock);
             Unwrap(r->router().LoadFrom(storage));
             return r;
           }),
           py::arg("storage"), py::arg("clock") = nullptr, py::keep_alive<1, 2>(),
           py::keep_alive<1, 3>())
      .def("route",
           [](PyRouter& r, const std::string& model) {
             sb::RoutePlan plan = r.router().Route(model);
             if (!plan.ok()) Raise(plan.status(), plan.retry_after());
             return PyPlan(std::move(plan));
           },
           py::arg("model"), py::keep_alive<0, 1>(),
           "A Plan for one request. NotFoundError when no enabled backend serves the model; "
           "ResourceExhaustedError (with retry_after seconds) when all are cooling or limited.")
      .def("reload", [](PyRouter& r) { Unwrap(r.router().LoadFrom(r.storage())); },
           "Routes the storage's current backends and config.")
      .def("reset_cooldown",
           [](PyRouter& r, const std::string& id) { Unwrap(r.router().ResetCooldown(id)); })
      .def("live_states",
           [](PyRouter& r) {
             py::list out;
             auto snapshot = r.router().snapshot();
             for (const sb::BackendLiveState& s : r.router().LiveStates()) {
               py::dict d;
               const auto* entry = snapshot->FindEntry(s.backend_id);
               d["backend_id"] = s.backend_id;
               d["name"] = entry != nullptr ? entry->backend.name : "";
               d["status"] = s.state.status;
               d["cooldown_until"] = s.state.cooldown_until;
               d["consecutive_429_count"] = s.state.consecutive_429_count;
               d["consecutive_failures"] = s.state.consecutive_failures;
               d["last_error"] = s.state.last_error;
               out.append(d);
             }
             return out;
           },
           "Each backend's live routing state, as dicts.")
      .def("flush", &PyRouter::Flush, "Waits until pending state and usage are stored.")
      .def("close", &PyRouter::Close, "Flushes and stops the writer; the router is unusable after.")
      .def("__enter__", [](py::object self) { return self; })
      .def("__exit__", [](PyRouter& r, py::args) { r.Close(); });

  // --- Admin -------------------------------------------------------------------------
  py::class_<sb::AdminService>(m, "Admin",
                               "Backend CRUD with write-only keys, config and usage; every "
                               "change is validated, stored and routed at once. JSON bodies "
                               "may be given as str or dict.")
      .def(py::init([](sb::Storage& storage, PyRouter& router, const sb::KeyCipher& cipher) {
             return std::make_unique<sb::AdminService>(storage, router.router(), cipher,
                                                       router.router().clock());
           }),
           py::arg("storage"), py::arg("router"), py::arg("cipher"), py::keep_alive<1, 2>(),
           py::keep_alive<1, 3>(), py::keep_alive<1, 4>())
      .def("create_backend",
           [](sb::AdminService& a, const py::object& body) {
             return Unwrap(a.CreateBackend(JsonText(body)));
           },
           py::arg("body"))
      .def("update_backend",
           [](sb::AdminService& a, const std::string& id, const py::object& body) {
             return Unwrap(a.UpdateBackend(id, JsonText(body)));
           },
           py::arg("id"), py::arg("body"))
      .def("get_backend",
           [](sb::AdminService& a, const std::string& id) { return Unwrap(a.GetBackend(id)); })
      .def("list_backends",
           [](sb::AdminService& a, std::optional<std::string> pool, std::optional<bool> enabled) {
             return Unwrap(a.ListBackends({.pool = std::move(pool), .enabled = enabled}));
           },
           py::arg("pool") = py::none(), py::arg("enabled") = py::none())
      .def("delete_backend",
           [](sb::AdminService& a, const std::string& id) { Unwrap(a.DeleteBackend(id)); })
      .def("reset_cooldown",
           [](sb::AdminService& a, const std::string& id) { return Unwrap(a.ResetCooldown(id)); })
      .def("get_config", [](sb::AdminService& a) { return Unwrap(a.GetConfig()); })
      .def("patch_config",
           [](sb::AdminService& a, const py::object& body) {
             return Unwrap(a.PatchConfig(JsonText(body)));
           })
      .def("usage",
           [](sb::AdminService& a, int limit, std::optional<int64_t> before) {
             return Unwrap(a.Usage(limit, before));
           },
           py::arg("limit") = 100, py::arg("before") = py::none())
      .def("create_client_key",
           [](sb::AdminService& a, const py::object& body) {
             sb::CreatedClientKey created = Unwrap(a.CreateClientKey(JsonText(body)));
             return py::make_tuple(created.secret, created.key);
           },
           py::arg("body"),
           "Creates a client key ({'name': ...}); returns (key, ClientKey). The key itself "
           "is returned this once and stored nowhere (only its SHA-256).")
      .def("list_client_keys", [](sb::AdminService& a) { return Unwrap(a.ListClientKeys()); })
      .def("revoke_client_key",
           [](sb::AdminService& a, const std::string& id) { Unwrap(a.RevokeClientKey(id)); });

  // --- Proxy ---------------------------------------------------------------------------
  py::class_<PyResponse>(m, "Response",
                         "A proxied response. A streamed one iterates over its SSE events "
                         "(str), each as it arrives; close() aborts the upstream transfer.")
      .def_property_readonly("status", &PyResponse::status)
      .def_property_readonly("headers", &PyResponse::headers)
      .def("header", &PyResponse::header, py::arg("name"), "A header, case-insensitive, or None.")
      .def_property_readonly("body", &PyResponse::body)
      .def_property_readonly("text", &PyResponse::text)
      .def_property_readonly("streamed", &PyResponse::streamed)
      .def("__iter__", [](py::object self) { return self; })
      .def("__next__", &PyResponse::NextEvent)
      .def("close", &PyResponse::Close)
      .def("__enter__", [](py::object self) { return self; })
      .def("__exit__", [](PyResponse& r, py::args) { r.Close(); });

  py::class_<PyProxy>(m, "Proxy",
                      "The proxy engine: routes a request, sends it upstream over libcurl with "
                      "the backend's key, fails over until the first byte, and records usage.")
      .def(py::init([](PyRouter& router, const sb::KeyCipher* cipher, double connect_timeout,
                       double request_timeout) {
             sb::ProxyOptions o;
             o.connect_timeout = std::chrono::duration_cast<sb::Duration>(
                 std::chrono::duration<double>(connect_timeout));
             o.request_timeout = std::chrono::duration_cast<sb::Duration>(
                 std::chrono::duration<double>(request_timeout));
             return std::make_unique<PyProxy>(router, cipher, o);
           }),
           py::arg("router"), py::arg("cipher") = nullptr, py::arg("connect_timeout") = 10.0,
           py::arg("request_timeout") = 0.0, py::keep_alive<1, 2>(), py::keep_alive<1, 3>())
      .def("forward",
           [](PyProxy& p, const std::string& endpoint, const py::object& body,
              const std::string& api, const std::string& request_id) {
             sb::ProxyRequest request;
             request.endpoint = endpoint;
             request.body = JsonText(body);
             std::optional<sb::Api> parsed = sb::ParseApi(api);
             if (!parsed) Raise(sb::InvalidArgumentError("api must be openai or anthropic", "api"));
             request.api = *parsed;
             request.request_id = request_id;
             sb::ProxyResponse r;
             {
               py::gil_scoped_release release;
               r = p.proxy().Handle(std::move(request));
             }
             return PyResponse(std::move(r));
           },
           py::arg("endpoint"), py::arg("body"), py::arg("api") = "openai",
           py::arg("request_id") = "", py::keep_alive<0, 1>(),
           "Serves one request (endpoint: '/chat/completions', ...; body: JSON str or dict). "
           "Returns once the response head is decided, with the GIL released meanwhile.")
      .def("models_json", [](PyProxy& p) { return p.proxy().ModelsJson(); })
      .def("metrics", &PyProxy::Metrics, "Prometheus text of the traffic so far.");
}
