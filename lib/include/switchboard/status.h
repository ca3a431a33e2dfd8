// switchboard/status.h
// Status and Result<T>: how every switchboard function reports failure.
// No public function throws; errors travel as values.
//
//   Result<Backend> b = storage.GetBackend(id);
//   if (!b.ok()) return b.status();          // or SWITCHBOARD_RETURN_IF_ERROR
//   Use(b->name);
//
// A validation failure names the offending field in `param()` (the admin API
// turns it into a 422 with that `param`).
#ifndef SWITCHBOARD_STATUS_H_
#define SWITCHBOARD_STATUS_H_

#include <cassert>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace switchboard {

enum class StatusCode {
  kOk,
  kInvalidArgument,
  kNotFound,
  kAlreadyExists,
  kFailedPrecondition,
  kResourceExhausted,
  kUnavailable,
  kDeadlineExceeded,
  kInternal,
};

// Returns "OK", "INVALID_ARGUMENT", ...
std::string_view StatusCodeName(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;  // OK
  Status(StatusCode code, std::string message, std::string param = "")
      : code_(code), message_(std::move(message)), param_(std::move(param)) {}

  static Status Ok() { return Status(); }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // The input field at fault ("api_base_url", "model_mappings.gpt-4o"), or "".
  const std::string& param() const { return param_; }

  // "INVALID_ARGUMENT: name: must match [A-Za-z0-9._-]{1,64}"
  std::string ToString() const;

  friend bool operator==(const Status& a, const Status& b) {
    return a.code_ == b.code_ && a.message_ == b.message_ && a.param_ == b.param_;
  }

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
  std::string param_;
};

Status InvalidArgumentError(std::string message, std::string param = "");
Status NotFoundError(std::string message);
Status AlreadyExistsError(std::string message, std::string param = "");
Status FailedPreconditionError(std::string message);
Status ResourceExhaustedError(std::string message);
Status UnavailableError(std::string message);
Status DeadlineExceededError(std::string message);
Status InternalError(std::string message);

// A value or the Status saying why there is none.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Status status) : status_(std::move(status)) {  // NOLINT: implicit by design
    assert(!status_.ok() && "Result needs a value or an error");
    if (status_.ok()) status_ = InternalError("Result built from OK status without a value");
  }

  bool ok() const { return value_.has_value(); }
  const Status& status() const { return status_; }

  // REQUIRES: ok()
  const T& value() const& { return *value_; }
  T& value() & { return *value_; }
  T&& value() && { return std::move(*value_); }
  const T& operator*() const& { return *value_; }
  T& operator*() & { return *value_; }
  T&& operator*() && { return std::move(*value_); }
  const T* operator->() const { return &*value_; }
  T* operator->() { return &*value_; }

 private:
  Status status_;
  std::optional<T> value_;
};

}  // namespace switchboard

#define SWITCHBOARD_STATUS_CONCAT_INNER_(a, b) a##b
#define SWITCHBOARD_STATUS_CONCAT_(a, b) SWITCHBOARD_STATUS_CONCAT_INNER_(a, b)

// Returns from the current function when `expr` (a Status or a Result<T>) is
// not OK, passing its Status on.
#define SWITCHBOARD_RETURN_IF_ERROR(expr)                                         \
  do {                                                                            \
    const auto& SWITCHBOARD_STATUS_CONCAT_(sb_status_, __LINE__) = (expr);        \
    if (!SWITCHBOARD_STATUS_CONCAT_(sb_status_, __LINE__).ok()) {                 \
      return ::switchboard::internal_status::StatusOf(                            \
          SWITCHBOARD_STATUS_CONCAT_(sb_status_, __LINE__));                      \
    }                                                                             \
  } while (false)

namespace switchboard::internal_status {
inline const Status& StatusOf(const Status& s) { return s; }
template <typename T>
const Status& StatusOf(const Result<T>& r) {
  return r.status();
}
}  // namespace switchboard::internal_status

#endif  // SWITCHBOARD_STATUS_H_
