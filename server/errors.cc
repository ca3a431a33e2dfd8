#include "errors.h"

#include "switchboard/json.h"
#include "switchboard/proxy.h"

namespace switchboard::server {

int HttpStatusFor(const Status& status, bool field_errors_422) {
  switch (status.code()) {
    case StatusCode::kOk:
      return 200;
    case StatusCode::kInvalidArgument:
      return field_errors_422 && !status.param().empty() ? 422 : 400;
    case StatusCode::kNotFound:
      return 404;
    case StatusCode::kAlreadyExists:
    case StatusCode::kFailedPrecondition:
      return 409;
    case StatusCode::kResourceExhausted:
      return 429;
    case StatusCode::kUnavailable:
      return 503;
    case StatusCode::kDeadlineExceeded:
      return 504;
    case StatusCode::kInternal:
      return 500;
  }
  return 500;
}

std::string_view ErrorTypeFor(int http_status) {
  switch (http_status) {
    case 401:
      return "authentication_error";
    case 403:
      return "permission_error";
    case 404:
      return "not_found_error";
    case 413:
      return "request_too_large";
    case 429:
      return "rate_limit_exceeded";
    case 502:
    case 504:
      return "upstream_error";
    case 503:
      return "service_unavailable";
    default:
      return http_status >= 500 ? "server_error" : "invalid_request_error";
  }
}

std::string_view ErrorCodeFor(int http_status) {
  switch (http_status) {
    case 400:
      return "invalid_request";
    case 401:
      return "invalid_api_key";
    case 404:
      return "not_found";
    case 405:
      return "method_not_allowed";
    case 408:
      return "request_timeout";
    case 413:
      return "request_too_large";
    case 414:
      return "uri_too_long";
    case 415:
      return "unsupported_media_type";
    case 422:
      return "invalid_value";
    case 429:
      return "rate_limit_exceeded";
    case 502:
      return "upstream_error";
    case 503:
      return "service_unavailable";
    case 504:
      return "upstream_timeout";
    default:
      return http_status >= 500 ? "internal_error" : "invalid_request";
  }
}

namespace {

// Anthropic's error types (https://docs.anthropic.com/en/api/errors).
std::string_view AnthropicErrorType(int http_status) {
  switch (http_status) {
    case 401:
      return "authentication_error";
    case 403:
      return "permission_error";
    case 404:
      return "not_found_error";
    case 413:
      return "request_too_large";
    case 429:
      return "rate_limit_error";
    case 529:
    case 503:
      return "overloaded_error";
    default:
      return http_status >= 500 ? "api_error" : "invalid_request_error";
  }
}

}  // namespace

std::string ErrorBody(Api api, int http_status, std::string_view message, std::string_view code,
                      std::string_view param) {
  if (api == Api::kAnthropic) {
    std::string out = R"({"type":"error","error":{"type":)";
    AppendJsonString(AnthropicErrorType(http_status), &out);
    out += R"(,"message":)";
    AppendJsonString(message, &out);
    out += "}}";
    return out;
  }
  // OpenAI uses "invalid_request_error" for 404s and 413s as well.
  std::string_view type = ErrorTypeFor(http_status);
  if (type == "not_found_error" || type == "request_too_large") type = "invalid_request_error";
  return OpenAIErrorJson(message, type, code.empty() ? ErrorCodeFor(http_status) : code, param);
}

}  // namespace switchboard::server
