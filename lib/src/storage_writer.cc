#include "switchboard/storage_writer.h"

#include <algorithm>
#include <iterator>
#include <utility>

namespace switchboard {
namespace {

// Zero would make the thread spin (interval) or never write (batch).
StorageWriterOptions Sanitized(StorageWriterOptions options) {
  options.max_batch = std::max<size_t>(1, options.max_batch);
  options.max_pending_usage = std::max<size_t>(1, options.max_pending_usage);
  options.flush_interval = std::max(options.flush_interval, std::chrono::milliseconds(1));
  return options;
}

}  // namespace

StorageWriter::StorageWriter(Storage& storage, StorageWriterOptions options)
    : storage_(storage), options_(Sanitized(std::move(options))) {
  // Last, once every member the thread reads is initialized.
  thread_ = std::thread([this] { Run(); });
}

StorageWriter::~StorageWriter() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  wake_.notify_one();
  thread_.join();
}

void StorageWriter::OnBackendState(const BackendState& state) {
  bool wake = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    pending_states_.insert_or_assign(state.backend_id, state);
    ++enqueued_seq_;
    wake = pending_states_.size() + pending_events_.size() + pending_usage_.size() >=
           options_.max_batch;
  }
  if (wake) wake_.notify_one();
}

void StorageWriter::OnCooldownEvent(const CooldownEvent& event) {
  bool wake = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    pending_events_.push_back(event);
    ++enqueued_seq_;
    wake = pending_states_.size() + pending_events_.size() + pending_usage_.size() >=
           options_.max_batch;
  }
  if (wake) wake_.notify_one();
}

void StorageWriter::AppendUsage(UsageRecord record) {
  bool wake = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    while (pending_usage_.size() >= options_.max_pending_usage) {
      pending_usage_.pop_front();
      ++stats_.dropped_usage;
    }
    pending_usage_.push_back(std::move(record));
    ++enqueued_seq_;
    wake = pending_states_.size() + pending_events_.size() + pending_usage_.size() >=
           options_.max_batch;
  }
  if (wake) wake_.notify_one();
}

Status StorageWriter::Flush() {
  std::unique_lock<std::mutex> lock(mu_);
  // The call takes a sequence number of its own, so that only a round which
  // starts after it (and so retries anything a failed round left queued) can
  // reach it.
  const uint64_t target = ++enqueued_seq_;
  flush_requested_ = true;
  wake_.notify_one();
  done_.wait(lock, [&] { return written_seq_ >= target; });
  // The outcome of the newest finished round. It took everything queued, so
  // OK means everything up to `target` is written.
  return stats_.last_error;
}

StorageWriterStats StorageWriter::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void StorageWriter::Run() {
  // After a failed round, a full queue is no reason to try again at once:
  // only the interval, a Flush() or the stop does, so a store that is down is
  // not hammered.
  bool backing_off = false;
  for (;;) {
    bool stop = false;
    {
      std::unique_lock<std::mutex> lock(mu_);
      wake_.wait_for(lock, options_.flush_interval, [&] {
        return stopping_ || flush_requested_ ||
               (!backing_off &&
                pending_states_.size() + pending_events_.size() + pending_usage_.size() >=
                    options_.max_batch);
      });
      stop = stopping_;
    }
    const Status status = WriteRound();
    if (stop) return;
    backing_off = !status.ok();
  }
}

Status StorageWriter::WriteRound() {
  std::vector<BackendState> states;
  std::vector<CooldownEvent> events;
  std::deque<UsageRecord> usage;
  uint64_t start_seq = 0;
  bool final_round = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    flush_requested_ = false;
    final_round = stopping_;
    start_seq = enqueued_seq_;
    states.reserve(pending_states_.size());
    for (auto& [id, state] : pending_states_) states.push_back(std::move(state));
    pending_states_.clear();
    events.swap(pending_events_);
    usage.swap(pending_usage_);
  }

  // Stop at the first failure: a store that refuses one write will most
  // likely refuse the next, and what is left goes back to the queue.
  Status status;
  int64_t states_written = 0;
  int64_t events_written = 0;
  int64_t usage_written = 0;
  if (!states.empty()) {
    status = storage_.UpdateBackendStates(states);
    if (status.ok()) {
      states_written = static_cast<int64_t>(states.size());
      states.clear();
    }
  }
  if (status.ok() && !events.empty()) {
    status = storage_.AppendCooldownEvents(events);
    if (status.ok()) {
      events_written = static_cast<int64_t>(events.size());
      events.clear();
    }
  }
  std::vector<UsageRecord> chunk;
  while (status.ok() && !usage.empty()) {
    const auto n = static_cast<std::ptrdiff_t>(std::min(options_.max_batch, usage.size()));
    chunk.assign(std::make_move_iterator(usage.begin()),
                 std::make_move_iterator(usage.begin() + n));
    usage.erase(usage.begin(), usage.begin() + n);
    status = storage_.AppendUsage(chunk);
    if (!status.ok()) {
      usage.insert(usage.begin(), std::make_move_iterator(chunk.begin()),
                   std::make_move_iterator(chunk.end()));
      break;
    }
    usage_written += n;
  }

  {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.written_states += states_written;
    stats_.written_events += events_written;
    stats_.written_usage += usage_written;
    if (!status.ok()) {
      ++stats_.failed_batches;
      if (final_round) {
        // Nobody is left to retry: what the store refused is lost.
        stats_.dropped_usage += static_cast<int64_t>(usage.size());
      } else {
        // Back to the front, in order. A state queued meanwhile is newer
        // than the one that failed, and wins.
        for (BackendState& state : states) {
          std::string id = state.backend_id;
          pending_states_.try_emplace(std::move(id), std::move(state));
        }
        pending_events_.insert(pending_events_.begin(), std::make_move_iterator(events.begin()),
                               std::make_move_iterator(events.end()));
        pending_usage_.insert(pending_usage_.begin(), std::make_move_iterator(usage.begin()),
                              std::make_move_iterator(usage.end()));
        while (pending_usage_.size() > options_.max_pending_usage) {
          pending_usage_.pop_front();
          ++stats_.dropped_usage;
        }
      }
    }
    // last_error is the newest round's outcome: it goes back to OK once the
    // store takes everything again (Flush() relies on that).
    stats_.last_error = status;
    written_seq_ = start_seq;
  }
  done_.notify_all();
  return status;
}

}  // namespace switchboard
