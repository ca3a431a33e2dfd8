// The stream translator (lib/src/translate/stream.cc) fed arbitrary upstream
// event sequences, one event at a time as the proxy does. Input: byte 0
// picks the direction (bit 0: Anthropic upstream -> OpenAI client, or the
// other way) and include_usage (bit 1); the rest is an SSE byte stream, split
// into events by SseParser.
// Invariants: no crash or sanitizer report; every client event is whole
// (ends in a blank line) and its data is JSON or [DONE]; nothing follows the
// end of the stream or an error event; the translator is never both
// complete and failed; an Anthropic client sees message_start first,
// content blocks opened and closed in order with deltas only inside an open
// block, and message_stop last.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "fuzz_util.h"
#include "rapidjson/document.h"
#include "switchboard/proxy.h"
#include "translate/translate.h"

namespace {

using namespace switchboard;

// What an Anthropic client has seen so far.
struct AnthropicOrder {
  bool started = false;
  bool stopped = false;
  std::optional<int64_t> open_block;
  int64_t next_block = 0;

  void See(const std::string& type, const rapidjson::Document& doc) {
    FUZZ_CHECK(!stopped);
    if (type == "error") return;
    if (type == "message_start") {
      FUZZ_CHECK(!started);
      started = true;
      return;
    }
    FUZZ_CHECK(started);
    if (type == "content_block_start") {
      FUZZ_CHECK(!open_block);
      FUZZ_CHECK(doc["index"].GetInt64() == next_block);
      open_block = next_block++;
    } else if (type == "content_block_delta") {
      FUZZ_CHECK(open_block && doc["index"].GetInt64() == *open_block);
    } else if (type == "content_block_stop") {
      FUZZ_CHECK(open_block && doc["index"].GetInt64() == *open_block);
      open_block.reset();
    } else if (type == "message_delta") {
      FUZZ_CHECK(!open_block);
    } else if (type == "message_stop") {
      stopped = true;
    } else {
      FUZZ_CHECK(false && "unexpected event type");
    }
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const bool anthropic_upstream = (data[0] & 1) == 0;
  internal::StreamTranslatorOptions options;
  options.include_usage = (data[0] & 2) != 0;
  options.created = 1700000000;
  const Api upstream = anthropic_upstream ? Api::kAnthropic : Api::kOpenAI;
  const Api client = anthropic_upstream ? Api::kOpenAI : Api::kAnthropic;
  auto translator = internal::NewStreamTranslator(upstream, client, options);
  FUZZ_CHECK(translator != nullptr);

  SseParser upstream_parser;
  std::vector<std::string> upstream_events;
  upstream_parser.Feed(fuzz::AsView(data + 1, size - 1), &upstream_events);

  AnthropicOrder order;
  bool ended = false;
  for (const std::string& e : upstream_events) {
    std::string out;
    translator->Feed(SseParser::EventType(e), SseParser::Data(e), &out);
    FUZZ_CHECK(!(translator->complete() && translator->failed()));
    if (out.empty()) continue;
    FUZZ_CHECK(!ended);
    SseParser client_parser;
    std::vector<std::string> client_events;
    client_parser.Feed(out, &client_events);
    FUZZ_CHECK(client_parser.pending().empty());  // whole events only
    for (const std::string& c : client_events) {
      const std::string type = SseParser::EventType(c);
      const std::string payload = SseParser::Data(c);
      if (payload == "[DONE]") {
        FUZZ_CHECK(client == Api::kOpenAI);
        FUZZ_CHECK(translator->complete());
        continue;
      }
      rapidjson::Document doc;
      doc.Parse(payload.data(), payload.size());
      FUZZ_CHECK(!doc.HasParseError() && doc.IsObject());
      if (client == Api::kAnthropic) {
        FUZZ_CHECK(std::string(doc["type"].GetString()) == type);
        order.See(type, doc);
      } else if (type != "error") {
        FUZZ_CHECK(std::string(doc["object"].GetString()) == "chat.completion.chunk");
      }
    }
    ended = translator->complete() || translator->failed();
  }
  return 0;
}
