// Translation between the OpenAI Chat Completions and the Anthropic Messages
// wire formats: requests, whole responses, error bodies, and SSE streams one
// upstream event at a time. Pure functions of their input (the stream
// translator keeps only its own state), so each is tested from golden files
// and fuzzed on its own. docs/translation.md has the mapping table and what
// cannot be mapped.
//
//   Result<std::string> up = OpenAIChatToAnthropicRequest(client_body, "claude-sonnet-4");
//   if (!up.ok()) return Http400(up.status().message(), up.status().param());
//   auto stream = NewStreamTranslator(Api::kAnthropic, Api::kOpenAI, {.include_usage = true});
//   for (each upstream SSE event e) stream->Feed(EventType(e), Data(e), &client_bytes);
//   if (!stream->complete()) ...;   // the upstream never ended its stream
#ifndef SWITCHBOARD_TRANSLATE_TRANSLATE_H_
#define SWITCHBOARD_TRANSLATE_TRANSLATE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "switchboard/status.h"
#include "switchboard/types.h"

namespace switchboard::internal {

// max_tokens sent to Anthropic when an OpenAI client gave neither max_tokens
// nor max_completion_tokens (Anthropic requires one).
inline constexpr int64_t kDefaultAnthropicMaxTokens = 4096;

// --- Requests --------------------------------------------------------------
// Each returns the upstream body with `model` set to `upstream_model`. A
// request that cannot be expressed in the other format is kInvalidArgument
// with param() naming the client's field (e.g. "n",
// "messages[2].content[0].type"); malformed JSON is kInvalidArgument with an
// empty param.

// An OpenAI chat.completions request as an Anthropic /v1/messages request.
Result<std::string> OpenAIChatToAnthropicRequest(std::string_view body,
                                                 std::string_view upstream_model);
// An Anthropic /v1/messages request as an OpenAI chat.completions request.
// A streaming request asks for stream_options.include_usage, so the answer
// can report output tokens.
Result<std::string> AnthropicToOpenAIChatRequest(std::string_view body,
                                                 std::string_view upstream_model);

// --- Whole responses (2xx bodies) -----------------------------------------
// kInvalidArgument when the body is not the expected shape.

// An Anthropic message as a chat.completion; `created` is its Unix time.
Result<std::string> AnthropicToOpenAIChatResponse(std::string_view body, int64_t created);
// A chat.completion (first choice) as an Anthropic message.
Result<std::string> OpenAIChatToAnthropicResponse(std::string_view body);

// Anthropic stop_reason -> OpenAI finish_reason, and back.
std::string_view FinishReasonForStopReason(std::string_view stop_reason);
std::string_view StopReasonForFinishReason(std::string_view finish_reason);
// OpenAI error type for an Anthropic error type ("overloaded_error" -> "server_error").
std::string_view OpenAIErrorTypeFor(std::string_view anthropic_type);

// --- Error bodies ----------------------------------------------------------
struct TranslatedError {
  int status = 0;
  std::string body;
};
// An upstream error answer of format `from` (JSON or not) in the shape a
// client of `to` expects, with the HTTP status that client should see
// (Anthropic's 529 overloaded becomes 503 for OpenAI clients).
TranslatedError TranslateErrorBody(Api from, Api to, int status, std::string_view body);

// One SSE error event in the client's format: "event: error" and the error
// body of `client` (OpenAI's {"error":{...}} or Anthropic's {"type":"error",...}).
std::string ErrorEventFor(Api client, std::string_view message, std::string_view type,
                          std::string_view code);

// --- Streams ---------------------------------------------------------------
struct StreamTranslatorOptions {
  // OpenAI clients: end with a usage chunk (choices: []) before [DONE], as
  // stream_options.include_usage asks.
  bool include_usage = false;
  // OpenAI clients: the chunks' "created".
  int64_t created = 0;
};

// Turns one upstream SSE stream into the client's. Fed one upstream event at
// a time; appends zero or more whole client SSE events. Not thread-safe; one
// owner.
class StreamTranslator {
 public:
  virtual ~StreamTranslator() = default;
  // `event_type` is the event: field ("" when none), `data` its data. Does
  // nothing once complete() or failed().
  virtual void Feed(std::string_view event_type, std::string_view data, std::string* out) = 0;
  // The upstream's end of stream ([DONE] or message_stop) was seen and the
  // client's end of stream appended.
  virtual bool complete() const = 0;
  // The upstream sent an error event or something unreadable: an error event
  // in the client's format was appended and nothing more will be.
  virtual bool failed() const = 0;
};

// A translator from `upstream` events to `client` events. REQUIRES: the two differ.
std::unique_ptr<StreamTranslator> NewStreamTranslator(Api upstream, Api client,
                                                      StreamTranslatorOptions options = {});

}  // namespace switchboard::internal

#endif  // SWITCHBOARD_TRANSLATE_TRANSLATE_H_
