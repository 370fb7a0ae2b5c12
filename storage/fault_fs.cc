#include "storage/fault_fs.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <map>
#include <mutex>
#include <random>
#include <utility>

#include "engine/assert.h"

namespace tw {
namespace fault_fs_internal {

struct FileState {
  uint64_t size = 0;    // bytes appended: what a reader sees now
  uint64_t synced = 0;  // bytes durable. Invariant: synced <= size.
  bool ever_synced = false;
};

struct Countdown {
  bool armed = false;
  uint64_t ok_left = 0;
  FaultFs::Injected kind = FaultFs::Injected::kIoError;
  // The failure a call that Fail() condemned answers.
  rocksdb::IOStatus Error(const char* what) const {
    if (kind == FaultFs::Injected::kNoSpace) {
      return rocksdb::IOStatus::NoSpace(std::string("fault_fs: injected ") + what,
                                        "No space left on device");
    }
    return rocksdb::IOStatus::IOError(std::string("fault_fs: injected ") + what);
  }
  // Counts one call; true = this call must fail.
  bool Fail() {
    if (!armed) return false;
    if (ok_left == 0) return true;
    --ok_left;
    return false;
  }
};

struct Shared {
  mutable std::mutex mu;
  bool active = true;
  Countdown append_failure;
  Countdown sync_failure;
  Countdown power_off_at_sync;
  uint64_t appends = 0;
  uint64_t syncs = 0;
  uint64_t injected = 0;  // calls FailAppends / FailSyncs / PowerOffAtSync made fail
  // Appends and syncs between their Before and After (the I/O runs outside the lock), and a
  // count of power cuts: a sync that saw one start while it ran never completed.
  uint64_t in_flight = 0;
  uint64_t power_cuts = 0;
  std::condition_variable idle;
  // By name, as RocksDB passes it (it builds every name of a file the same way).
  std::map<std::string, std::shared_ptr<FileState>> files;
};

}  // namespace fault_fs_internal

namespace {

using fault_fs_internal::FileState;
using fault_fs_internal::Shared;

rocksdb::IOStatus Inactive() {
  return rocksdb::IOStatus::IOError("fault_fs: file system inactive");
}

// A writable file that reports what it appends and syncs to the shared state. The I/O itself
// runs outside the lock: RocksDB writes several files from several threads at once.
class TrackedFile final : public rocksdb::FSWritableFileOwnerWrapper {
 public:
  TrackedFile(std::unique_ptr<rocksdb::FSWritableFile> file, std::shared_ptr<Shared> shared,
              std::shared_ptr<FileState> state)
      : FSWritableFileOwnerWrapper(std::move(file)),
        shared_(std::move(shared)),
        state_(std::move(state)) {}

  rocksdb::IOStatus Append(const rocksdb::Slice& data, const rocksdb::IOOptions& opts,
                           rocksdb::IODebugContext* dbg) override {
    auto s = BeforeAppend();
    if (!s.ok()) return s;
    s = target()->Append(data, opts, dbg);
    AfterAppend(kAtEnd, data.size(), s.ok());
    return s;
  }
  rocksdb::IOStatus Append(const rocksdb::Slice& data, const rocksdb::IOOptions& opts,
                           const rocksdb::DataVerificationInfo& info,
                           rocksdb::IODebugContext* dbg) override {
    auto s = BeforeAppend();
    if (!s.ok()) return s;
    s = target()->Append(data, opts, info, dbg);
    AfterAppend(kAtEnd, data.size(), s.ok());
    return s;
  }
  rocksdb::IOStatus PositionedAppend(const rocksdb::Slice& data, uint64_t offset,
                                     const rocksdb::IOOptions& opts,
                                     rocksdb::IODebugContext* dbg) override {
    auto s = BeforeAppend();
    if (!s.ok()) return s;
    s = target()->PositionedAppend(data, offset, opts, dbg);
    AfterAppend(offset, data.size(), s.ok());
    return s;
  }
  rocksdb::IOStatus PositionedAppend(const rocksdb::Slice& data, uint64_t offset,
                                     const rocksdb::IOOptions& opts,
                                     const rocksdb::DataVerificationInfo& info,
                                     rocksdb::IODebugContext* dbg) override {
    auto s = BeforeAppend();
    if (!s.ok()) return s;
    s = target()->PositionedAppend(data, offset, opts, info, dbg);
    AfterAppend(offset, data.size(), s.ok());
    return s;
  }

  rocksdb::IOStatus Sync(const rocksdb::IOOptions& opts, rocksdb::IODebugContext* dbg) override {
    uint64_t covered = 0;
    uint64_t epoch = 0;
    auto s = BeforeSync(&covered, &epoch);
    if (!s.ok()) return s;
    s = target()->Sync(opts, dbg);
    return AfterSync(covered, epoch, s);
  }
  rocksdb::IOStatus Fsync(const rocksdb::IOOptions& opts, rocksdb::IODebugContext* dbg) override {
    uint64_t covered = 0;
    uint64_t epoch = 0;
    auto s = BeforeSync(&covered, &epoch);
    if (!s.ok()) return s;
    s = target()->Fsync(opts, dbg);
    return AfterSync(covered, epoch, s);
  }

  rocksdb::IOStatus Truncate(uint64_t size, const rocksdb::IOOptions& opts,
                             rocksdb::IODebugContext* dbg) override {
    if (!IsActive()) return Inactive();
    auto s = target()->Truncate(size, opts, dbg);
    if (s.ok()) {
      std::lock_guard<std::mutex> lock(shared_->mu);
      state_->size = size;
      state_->synced = std::min(state_->synced, size);
    }
    return s;
  }

  // Flush, RangeSync and Close move data towards the disk but promise no durability, so they
  // change no tracking; they only stop working when the machine is off.
  rocksdb::IOStatus Flush(const rocksdb::IOOptions& opts, rocksdb::IODebugContext* dbg) override {
    return IsActive() ? target()->Flush(opts, dbg) : Inactive();
  }
  rocksdb::IOStatus RangeSync(uint64_t offset, uint64_t nbytes, const rocksdb::IOOptions& opts,
                              rocksdb::IODebugContext* dbg) override {
    return IsActive() ? target()->RangeSync(offset, nbytes, opts, dbg) : Inactive();
  }
  rocksdb::IOStatus Close(const rocksdb::IOOptions& opts, rocksdb::IODebugContext* dbg) override {
    return IsActive() ? target()->Close(opts, dbg) : Inactive();
  }

 private:
  static constexpr uint64_t kAtEnd = ~uint64_t{0};

  bool IsActive() const {
    std::lock_guard<std::mutex> lock(shared_->mu);
    return shared_->active;
  }

  rocksdb::IOStatus BeforeAppend() {
    std::lock_guard<std::mutex> lock(shared_->mu);
    if (!shared_->active) return Inactive();
    if (shared_->append_failure.Fail()) {
      ++shared_->injected;
      return shared_->append_failure.Error("append failure");
    }
    ++shared_->in_flight;
    return rocksdb::IOStatus::OK();
  }

  void AfterAppend(uint64_t offset, size_t n, bool ok) {
    std::lock_guard<std::mutex> lock(shared_->mu);
    if (ok) {
      const uint64_t start = offset == kAtEnd ? state_->size : offset;
      state_->size = std::max(state_->size, start + n);
      ++shared_->appends;
    }
    Done();
  }

  // REQUIRES: shared_->mu held.
  void Done() {
    TW_ASSERT(shared_->in_flight > 0);
    if (--shared_->in_flight == 0) shared_->idle.notify_all();
  }

  // A sync covers what was appended before it started, not what arrives while it runs.
  rocksdb::IOStatus BeforeSync(uint64_t* covered, uint64_t* epoch) {
    std::lock_guard<std::mutex> lock(shared_->mu);
    if (!shared_->active) return Inactive();
    if (shared_->sync_failure.Fail()) {
      ++shared_->injected;
      return shared_->sync_failure.Error("sync failure");
    }
    if (shared_->power_off_at_sync.Fail()) {
      ++shared_->injected;
      shared_->active = false;
      ++shared_->power_cuts;
      return rocksdb::IOStatus::IOError("fault_fs: power cut at sync");
    }
    *covered = state_->size;
    *epoch = shared_->power_cuts;
    ++shared_->in_flight;
    return rocksdb::IOStatus::OK();
  }

  // Power that went while the sync ran means the sync never completed: it covers nothing and
  // fails, so nobody acknowledges what it was to make durable (tools/crashtest cuts power at
  // random instants, syncs in flight included).
  rocksdb::IOStatus AfterSync(uint64_t covered, uint64_t epoch, rocksdb::IOStatus s) {
    std::lock_guard<std::mutex> lock(shared_->mu);
    Done();
    if (!s.ok()) return s;
    if (epoch != shared_->power_cuts) return Inactive();
    state_->synced = std::max(state_->synced, std::min(covered, state_->size));
    state_->ever_synced = true;
    ++shared_->syncs;
    TW_ASSERT(state_->synced <= state_->size);
    return rocksdb::IOStatus::OK();
  }

  std::shared_ptr<Shared> shared_;
  std::shared_ptr<FileState> state_;
};

// The POSIX FileSystem of RocksDB 7.8 does not implement FileSystem::Truncate.
rocksdb::IOStatus TruncateFile(rocksdb::FileSystem* fs, const std::string& name, uint64_t size) {
  auto s = fs->Truncate(name, static_cast<size_t>(size), rocksdb::IOOptions(), nullptr);
  if (!s.IsNotSupported()) return s;
  if (::truncate(name.c_str(), static_cast<off_t>(size)) == 0) return rocksdb::IOStatus::OK();
  return rocksdb::IOStatus::IOError("truncate " + name + ": " + std::strerror(errno));
}

Status ToStatus(const rocksdb::IOStatus& s) {
  return s.ok() ? Status::Ok() : Status::IoError(s.ToString());
}

}  // namespace

FaultFs::FaultFs(std::shared_ptr<rocksdb::FileSystem> base)
    : FileSystemWrapper(base), shared_(std::make_shared<Shared>()) {
  TW_ASSERT(base != nullptr);
}

FaultFs::~FaultFs() = default;

void FaultFs::SetActive(bool active) {
  std::lock_guard<std::mutex> lock(shared_->mu);
  if (shared_->active && !active) ++shared_->power_cuts;
  shared_->active = active;
}

bool FaultFs::WaitForCallsInFlight(int64_t timeout_ms) {
  std::unique_lock<std::mutex> lock(shared_->mu);
  return shared_->idle.wait_for(lock, std::chrono::milliseconds(timeout_ms),
                                [&] { return shared_->in_flight == 0; });
}

Status FaultFs::DropUnsyncedData(uint64_t torn_seed) {
  std::lock_guard<std::mutex> lock(shared_->mu);
  std::mt19937_64 rng(torn_seed);
  Status first_error;
  rocksdb::IOOptions io;
  for (const auto& [name, state] : shared_->files) {
    rocksdb::IOStatus s;
    if (!state->ever_synced) {
      s = target()->DeleteFile(name, io, nullptr);
      if (s.IsNotFound()) s = rocksdb::IOStatus::OK();
    } else if (state->size > state->synced) {
      uint64_t keep = state->synced;
      if (torn_seed != 0) keep += rng() % (state->size - state->synced + 1);
      s = TruncateFile(target(), name, keep);
    }
    if (!s.ok() && first_error.ok()) first_error = ToStatus(s);
  }
  shared_->files.clear();
  return first_error;
}

void FaultFs::FailAppends(uint64_t ok_before, Injected kind) {
  std::lock_guard<std::mutex> lock(shared_->mu);
  shared_->append_failure = {true, ok_before, kind};
}

void FaultFs::FailSyncs(uint64_t ok_before, Injected kind) {
  std::lock_guard<std::mutex> lock(shared_->mu);
  shared_->sync_failure = {true, ok_before, kind};
}

void FaultFs::PowerOffAtSync(uint64_t ok_before) {
  std::lock_guard<std::mutex> lock(shared_->mu);
  shared_->power_off_at_sync = {true, ok_before, Injected::kIoError};
}

void FaultFs::ClearFailures() {
  std::lock_guard<std::mutex> lock(shared_->mu);
  shared_->append_failure = {};
  shared_->sync_failure = {};
  shared_->power_off_at_sync = {};
}

uint64_t FaultFs::append_count() const {
  std::lock_guard<std::mutex> lock(shared_->mu);
  return shared_->appends;
}

uint64_t FaultFs::sync_count() const {
  std::lock_guard<std::mutex> lock(shared_->mu);
  return shared_->syncs;
}

uint64_t FaultFs::injected_count() const {
  std::lock_guard<std::mutex> lock(shared_->mu);
  return shared_->injected;
}

uint64_t FaultFs::unsynced_bytes() const {
  std::lock_guard<std::mutex> lock(shared_->mu);
  uint64_t n = 0;
  for (const auto& [name, state] : shared_->files) {
    n += state->ever_synced ? state->size - state->synced : state->size;
  }
  return n;
}

rocksdb::IOStatus FaultFs::CheckActive() const {
  std::lock_guard<std::mutex> lock(shared_->mu);
  return shared_->active ? rocksdb::IOStatus::OK() : Inactive();
}

rocksdb::IOStatus FaultFs::Wrap(const std::string& fname, uint64_t durable_bytes, bool ever_synced,
                                std::unique_ptr<rocksdb::FSWritableFile>* file) {
  auto state = std::make_shared<FileState>();
  state->size = durable_bytes;
  state->synced = durable_bytes;
  state->ever_synced = ever_synced;
  {
    std::lock_guard<std::mutex> lock(shared_->mu);
    shared_->files[fname] = state;
  }
  *file = std::make_unique<TrackedFile>(std::move(*file), shared_, std::move(state));
  return rocksdb::IOStatus::OK();
}

rocksdb::IOStatus FaultFs::NewWritableFile(const std::string& fname,
                                           const rocksdb::FileOptions& opts,
                                           std::unique_ptr<rocksdb::FSWritableFile>* result,
                                           rocksdb::IODebugContext* dbg) {
  auto s = CheckActive();
  if (s.ok()) s = target()->NewWritableFile(fname, opts, result, dbg);
  if (s.ok()) s = Wrap(fname, 0, false, result);  // created (or truncated): nothing durable
  return s;
}

rocksdb::IOStatus FaultFs::ReopenWritableFile(const std::string& fname,
                                              const rocksdb::FileOptions& opts,
                                              std::unique_ptr<rocksdb::FSWritableFile>* result,
                                              rocksdb::IODebugContext* dbg) {
  auto s = CheckActive();
  if (!s.ok()) return s;
  uint64_t existing = 0;
  const bool existed = target()->GetFileSize(fname, rocksdb::IOOptions(), &existing, dbg).ok();
  {
    std::lock_guard<std::mutex> lock(shared_->mu);
    auto it = shared_->files.find(fname);
    // Already tracked: only its synced prefix is durable, not all it holds.
    if (it != shared_->files.end()) {
      s = target()->ReopenWritableFile(fname, opts, result, dbg);
      if (s.ok()) *result = std::make_unique<TrackedFile>(std::move(*result), shared_, it->second);
      return s;
    }
  }
  s = target()->ReopenWritableFile(fname, opts, result, dbg);
  if (s.ok()) s = Wrap(fname, existing, existed, result);
  return s;
}

rocksdb::IOStatus FaultFs::ReuseWritableFile(const std::string& fname, const std::string& old_fname,
                                             const rocksdb::FileOptions& opts,
                                             std::unique_ptr<rocksdb::FSWritableFile>* result,
                                             rocksdb::IODebugContext* dbg) {
  auto s = CheckActive();
  if (s.ok()) s = target()->ReuseWritableFile(fname, old_fname, opts, result, dbg);
  if (!s.ok()) return s;
  {
    std::lock_guard<std::mutex> lock(shared_->mu);
    shared_->files.erase(old_fname);
  }
  // Recycled: its old bytes are garbage to the reader, so treat it as created empty.
  return Wrap(fname, 0, false, result);
}

// Random-read-write files are not tracked: the store's configuration never writes through them.
rocksdb::IOStatus FaultFs::NewRandomRWFile(const std::string& fname,
                                           const rocksdb::FileOptions& opts,
                                           std::unique_ptr<rocksdb::FSRandomRWFile>* result,
                                           rocksdb::IODebugContext* dbg) {
  auto s = CheckActive();
  return s.ok() ? target()->NewRandomRWFile(fname, opts, result, dbg) : s;
}

rocksdb::IOStatus FaultFs::DeleteFile(const std::string& fname, const rocksdb::IOOptions& opts,
                                      rocksdb::IODebugContext* dbg) {
  auto s = CheckActive();
  if (s.ok()) s = target()->DeleteFile(fname, opts, dbg);
  if (s.ok()) {
    std::lock_guard<std::mutex> lock(shared_->mu);
    shared_->files.erase(fname);
  }
  return s;
}

rocksdb::IOStatus FaultFs::RenameFile(const std::string& src, const std::string& dst,
                                      const rocksdb::IOOptions& opts,
                                      rocksdb::IODebugContext* dbg) {
  auto s = CheckActive();
  if (s.ok()) s = target()->RenameFile(src, dst, opts, dbg);
  if (s.ok()) {
    std::lock_guard<std::mutex> lock(shared_->mu);
    auto node = shared_->files.extract(src);
    shared_->files.erase(dst);
    if (!node.empty()) {
      node.key() = dst;
      shared_->files.insert(std::move(node));
    }
  }
  return s;
}

rocksdb::IOStatus FaultFs::LinkFile(const std::string& src, const std::string& dst,
                                    const rocksdb::IOOptions& opts, rocksdb::IODebugContext* dbg) {
  auto s = CheckActive();
  return s.ok() ? target()->LinkFile(src, dst, opts, dbg) : s;
}

rocksdb::IOStatus FaultFs::Truncate(const std::string& fname, size_t size,
                                    const rocksdb::IOOptions& opts, rocksdb::IODebugContext* dbg) {
  auto s = CheckActive();
  if (s.ok()) s = target()->Truncate(fname, size, opts, dbg);
  if (s.ok()) {
    std::lock_guard<std::mutex> lock(shared_->mu);
    auto it = shared_->files.find(fname);
    if (it != shared_->files.end()) {
      it->second->size = size;
      it->second->synced = std::min<uint64_t>(it->second->synced, size);
    }
  }
  return s;
}

rocksdb::IOStatus FaultFs::CreateDir(const std::string& dirname, const rocksdb::IOOptions& opts,
                                     rocksdb::IODebugContext* dbg) {
  auto s = CheckActive();
  return s.ok() ? target()->CreateDir(dirname, opts, dbg) : s;
}

rocksdb::IOStatus FaultFs::CreateDirIfMissing(const std::string& dirname,
                                              const rocksdb::IOOptions& opts,
                                              rocksdb::IODebugContext* dbg) {
  auto s = CheckActive();
  return s.ok() ? target()->CreateDirIfMissing(dirname, opts, dbg) : s;
}

rocksdb::IOStatus FaultFs::DeleteDir(const std::string& dirname, const rocksdb::IOOptions& opts,
                                     rocksdb::IODebugContext* dbg) {
  auto s = CheckActive();
  return s.ok() ? target()->DeleteDir(dirname, opts, dbg) : s;
}

}  // namespace tw
