// A scripted UpstreamClient for proxy tests: no network. Each backend URL
// prefix gets a queue of replies (the last one repeats); every request made
// is recorded.
#ifndef SWITCHBOARD_TESTS_SUPPORT_FAKE_UPSTREAM_H_
#define SWITCHBOARD_TESTS_SUPPORT_FAKE_UPSTREAM_H_

#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "switchboard/upstream.h"

namespace switchboard::testing {

struct FakeReply {
  int status = 200;
  Headers headers = {{"content-type", "application/json"}};
  // Delivered one Read() each.
  std::vector<std::string> chunks;
  // Set: AwaitHead fails with it (no response).
  TransportError head_error = TransportError::kNone;
  // Set: Read fails with it after the chunks.
  TransportError body_error = TransportError::kNone;
  // AwaitHead polls `cancelled` until it returns true (a hanging upstream).
  bool hang = false;
};

inline FakeReply JsonReply(int status, std::string body) {
  FakeReply r;
  r.status = status;
  r.chunks = {std::move(body)};
  return r;
}

inline FakeReply SseReply(std::vector<std::string> events) {
  FakeReply r;
  r.headers = {{"content-type", "text/event-stream"}};
  r.chunks = std::move(events);
  return r;
}

inline FakeReply ErrorReply(TransportError e) {
  FakeReply r;
  r.status = 0;
  r.head_error = e;
  return r;
}

class FakeUpstream final : public UpstreamClient {
 public:
  // Replies for requests whose URL starts with `url_prefix`.
  void Script(const std::string& url_prefix, std::vector<FakeReply> replies) {
    std::lock_guard<std::mutex> lock(mu_);
    scripts_[url_prefix] = std::deque<FakeReply>(replies.begin(), replies.end());
  }

  std::vector<UpstreamRequest> requests() const {
    std::lock_guard<std::mutex> lock(mu_);
    return requests_;
  }
  int cancelled_calls() const {
    std::lock_guard<std::mutex> lock(mu_);
    return cancelled_;
  }
  int abandoned_calls() const {
    std::lock_guard<std::mutex> lock(mu_);
    return abandoned_;
  }

  std::unique_ptr<UpstreamCall> Start(UpstreamRequest request) override {
    std::lock_guard<std::mutex> lock(mu_);
    FakeReply reply = ErrorReply(TransportError::kConnect);
    for (auto& [prefix, queue] : scripts_) {
      if (request.url.rfind(prefix, 0) == 0 && !queue.empty()) {
        reply = queue.front();
        if (queue.size() > 1) queue.pop_front();
      }
    }
    requests_.push_back(std::move(request));
    return std::make_unique<Call>(this, std::move(reply));
  }

 private:
  class Call final : public UpstreamCall {
   public:
    Call(FakeUpstream* owner, FakeReply reply) : owner_(owner), reply_(std::move(reply)) {}
    ~Call() override {
      if (!finished_) {
        std::lock_guard<std::mutex> lock(owner_->mu_);
        ++owner_->abandoned_;
      }
    }

    UpstreamHead AwaitHead(const CancelFn& cancelled) override {
      UpstreamHead head;
      if (reply_.hang) {
        while (!(cancelled && cancelled())) {
        }
        error_ = TransportError::kCancelled;
        finished_ = true;
        std::lock_guard<std::mutex> lock(owner_->mu_);
        ++owner_->cancelled_;
        head.error = TransportError::kCancelled;
        return head;
      }
      if (reply_.head_error != TransportError::kNone) {
        error_ = reply_.head_error;
        message_ = std::string(TransportErrorName(error_)) + " (fake)";
        finished_ = true;
        head.error = error_;
        head.error_message = message_;
        return head;
      }
      head.status = reply_.status;
      head.headers = reply_.headers;
      head.ttfb = std::chrono::milliseconds(5);
      return head;
    }

    ReadResult Read(std::string* out, const CancelFn& cancelled) override {
      if (cancelled && cancelled()) {
        error_ = TransportError::kCancelled;
        finished_ = true;
        return ReadResult::kError;
      }
      if (next_ < reply_.chunks.size()) {
        out->append(reply_.chunks[next_++]);
        return ReadResult::kData;
      }
      finished_ = true;
      if (reply_.body_error != TransportError::kNone) {
        error_ = reply_.body_error;
        message_ = std::string(TransportErrorName(error_)) + " (fake)";
        return ReadResult::kError;
      }
      return ReadResult::kEnd;
    }

    TransportError error() const override { return error_; }
    const std::string& error_message() const override { return message_; }

   private:
    FakeUpstream* owner_;
    FakeReply reply_;
    size_t next_ = 0;
    bool finished_ = false;
    TransportError error_ = TransportError::kNone;
    std::string message_;
  };

  mutable std::mutex mu_;
  std::map<std::string, std::deque<FakeReply>> scripts_;  // guarded by mu_
  std::vector<UpstreamRequest> requests_;                 // guarded by mu_
  int cancelled_ = 0;                                     // guarded by mu_
  int abandoned_ = 0;                                     // guarded by mu_
};

}  // namespace switchboard::testing

#endif  // SWITCHBOARD_TESTS_SUPPORT_FAKE_UPSTREAM_H_
