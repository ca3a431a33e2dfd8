#include "errors.h"

#include <catch2/catch.hpp>

using switchboard::Api;
using switchboard::StatusCode;
using switchboard::server::ErrorBody;
using switchboard::server::HttpStatusFor;

TEST_CASE("HttpStatusFor maps every code to the contract's status", "[errors]") {
  CHECK(HttpStatusFor(switchboard::InvalidArgumentError("bad")) == 400);
  CHECK(HttpStatusFor(switchboard::NotFoundError("x")) == 404);
  CHECK(HttpStatusFor(switchboard::AlreadyExistsError("x")) == 409);
  CHECK(HttpStatusFor(switchboard::FailedPreconditionError("x")) == 409);
  CHECK(HttpStatusFor(switchboard::ResourceExhaustedError("x")) == 429);
  CHECK(HttpStatusFor(switchboard::UnavailableError("x")) == 503);
  CHECK(HttpStatusFor(switchboard::DeadlineExceededError("x")) == 504);
  CHECK(HttpStatusFor(switchboard::InternalError("x")) == 500);
}

TEST_CASE("HttpStatusFor gives 422 for a named field only when asked", "[errors]") {
  const switchboard::Status field = switchboard::InvalidArgumentError("too long", "name");
  CHECK(HttpStatusFor(field) == 400);
  CHECK(HttpStatusFor(field, /*field_errors_422=*/true) == 422);
  CHECK(HttpStatusFor(switchboard::InvalidArgumentError("malformed"), true) == 400);
}

TEST_CASE("ErrorBody uses OpenAI's shape, and Anthropic's for Anthropic clients", "[errors]") {
  CHECK(ErrorBody(Api::kOpenAI, 401, "no key") ==
        R"({"error":{"message":"no key","type":"authentication_error","param":null,)"
        R"("code":"invalid_api_key"}})");
  CHECK(ErrorBody(Api::kOpenAI, 400, "bad", "invalid_model", "model") ==
        R"({"error":{"message":"bad","type":"invalid_request_error","param":"model",)"
        R"("code":"invalid_model"}})");
  CHECK(ErrorBody(Api::kAnthropic, 429, "slow down") ==
        R"({"type":"error","error":{"type":"rate_limit_error","message":"slow down"}})");
}
