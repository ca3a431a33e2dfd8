// switchboard/storage_writer.h
// The write-behind queue between the request path and Storage: backend state
// changes, cooldown events and usage records are queued in memory (never
// blocking on disk) and written in batches by one background thread.
//
//   StorageWriter writer(storage);            // starts its thread
//   CooldownManager cooldowns(clock, &writer);
//   writer.AppendUsage(record);               // returns at once
//   writer.Flush();                           // on shutdown (the destructor does too)
#ifndef SWITCHBOARD_STORAGE_WRITER_H_
#define SWITCHBOARD_STORAGE_WRITER_H_

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "switchboard/cooldown_manager.h"
#include "switchboard/status.h"
#include "switchboard/storage.h"

namespace switchboard {

struct StorageWriterOptions {
  // Most records one transaction writes.
  size_t max_batch = 512;
  // How long a queued item may wait before the thread writes it.
  std::chrono::milliseconds flush_interval{200};
  // Usage records kept while the store is slow or down; beyond it the oldest
  // are dropped (and counted). State changes are coalesced per backend and
  // never dropped.
  size_t max_pending_usage = 100000;
};

struct StorageWriterStats {
  int64_t written_usage = 0;
  int64_t written_states = 0;
  int64_t written_events = 0;
  int64_t dropped_usage = 0;
  int64_t failed_batches = 0;  // batches the store refused (retried later)
  Status last_error;
};

// Thread-safe. `storage` must outlive the writer.
class StorageWriter final : public StateSink {
 public:
  explicit StorageWriter(Storage& storage, StorageWriterOptions options = {});
  ~StorageWriter() override;  // flushes, then stops the thread
  StorageWriter(const StorageWriter&) = delete;
  StorageWriter& operator=(const StorageWriter&) = delete;

  // StateSink: queue and return. The newest state per backend wins.
  void OnBackendState(const BackendState& state) override;
  void OnCooldownEvent(const CooldownEvent& event) override;

  void AppendUsage(UsageRecord record);

  // Blocks until everything queued before the call is written, or the store
  // failed on it (that error is returned; the items stay queued for retry).
  Status Flush();

  StorageWriterStats stats() const;

 private:
  void Run();
  // Writes one round of queued items. REQUIRES: mu_ not held.
  Status WriteRound();

  Storage& storage_;
  const StorageWriterOptions options_;

  mutable std::mutex mu_;
  std::condition_variable wake_;   // the thread waits on it for work
  std::condition_variable done_;   // Flush() waits on it for progress
  std::unordered_map<std::string, BackendState> pending_states_;  // guarded by mu_
  std::vector<CooldownEvent> pending_events_;                     // guarded by mu_
  std::deque<UsageRecord> pending_usage_;                         // guarded by mu_, oldest first
  uint64_t enqueued_seq_ = 0;   // guarded by mu_: items ever queued
  uint64_t written_seq_ = 0;    // guarded by mu_: enqueued_seq_ as of the last finished round
  bool flush_requested_ = false;  // guarded by mu_
  bool stopping_ = false;         // guarded by mu_
  StorageWriterStats stats_;      // guarded by mu_
  std::thread thread_;
};

}  // namespace switchboard

#endif  // SWITCHBOARD_STORAGE_WRITER_H_
