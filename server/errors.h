// server/errors.h
// The HTTP edge's error mapping: one HttpStatusFor(Status), and the error
// bodies clients get, in OpenAI's shape (Anthropic's on /v1/messages).
//
//   Status s = storage.GetBackend(id).status();
//   int http = HttpStatusFor(s);                         // 404
//   res.set_content(ErrorBody(Api::kOpenAI, http, s.message()), "application/json");
#ifndef SWITCHBOARD_SERVER_ERRORS_H_
#define SWITCHBOARD_SERVER_ERRORS_H_

#include <string>
#include <string_view>

#include "switchboard/status.h"
#include "switchboard/types.h"

namespace switchboard::server {

// InvalidArgument 400 (422 when `param()` names a field and `field_errors_422`,
// as the admin API wants), NotFound 404, AlreadyExists/FailedPrecondition
// 409, ResourceExhausted 429, Unavailable 503, DeadlineExceeded 504,
// Internal 500. REQUIRES: !status.ok()
int HttpStatusFor(const Status& status, bool field_errors_422 = false);

// The OpenAI error "type" for an HTTP status: "invalid_request_error",
// "authentication_error", "rate_limit_exceeded", "server_error", ...
std::string_view ErrorTypeFor(int http_status);
// The default "code" for an HTTP status: "invalid_json", "invalid_api_key",
// "not_found", "method_not_allowed", "request_too_large", ...
std::string_view ErrorCodeFor(int http_status);

// An error body in the shape a client of `api` expects:
//   openai:    {"error":{"message","type","param","code"}}
//   anthropic: {"type":"error","error":{"type","message"}}
// `code` defaults to ErrorCodeFor(http_status).
std::string ErrorBody(Api api, int http_status, std::string_view message,
                      std::string_view code = "", std::string_view param = "");

}  // namespace switchboard::server

#endif  // SWITCHBOARD_SERVER_ERRORS_H_
