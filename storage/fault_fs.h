// FaultFs: a rocksdb::FileSystem wrapper for crash and failure tests of the RocksDB store.
//
// It tracks, per file it saw created, how many bytes were appended and how many of them are
// durable (covered by a Sync/Fsync), and can then simulate a power cut: DropUnsyncedData()
// truncates every file to its durable size and deletes files that were never synced. It can also
// make appends and syncs fail, to test poisoning through the real RocksDB write path.
//
// Use: auto fs = std::make_shared<FaultFs>(); RocksStoreTestHooks hooks; hooks.file_system = fs
// (storage/rocksdb_store_testing.h).
// A crash test: write; fs->SetActive(false) (the machine is off: nothing more reaches a file);
// destroy the store; fs->DropUnsyncedData(); fs->SetActive(true); reopen and check.
//
// The model, and where it is simpler than a real disk:
//  - Durable = covered by Sync or Fsync. RangeSync is NOT durability (sync_file_range neither
//    flushes the device cache nor the file's metadata), nor is Flush or Close.
//  - Files that existed before this FaultFs first saw them are treated as durable as they are.
//  - Directory entries: a file synced at least once keeps its name (renames included) even if
//    its directory was never fsynced; a real file system may lose that entry. Deletions are
//    never undone.
//  - With a torn seed, DropUnsyncedData keeps a random prefix of each file's unsynced tail, as a
//    disk that wrote some pages in order before power went; never later pages without earlier.
//
// Thread-safe: RocksDB calls it from its background threads, the test from its own.
#pragma once

#include <rocksdb/file_system.h>

#include <cstdint>
#include <memory>
#include <string>

#include "engine/status.h"

namespace tw {

namespace fault_fs_internal {
struct Shared;  // defined in fault_fs.cc
}  // namespace fault_fs_internal

class FaultFs final : public rocksdb::FileSystemWrapper {
 public:
  explicit FaultFs(std::shared_ptr<rocksdb::FileSystem> base = rocksdb::FileSystem::Default());
  ~FaultFs() override;

  static const char* kClassName() { return "TwFaultFs"; }
  const char* Name() const override { return kClassName(); }

  // ---- power cut ----
  // false: every write-path call (append, sync, create, rename, delete, ...) fails with IOError
  // and changes nothing, as if the machine had stopped. Reads still work. A sync that was
  // running when the file system went inactive fails too and covers nothing.
  void SetActive(bool active);
  // Waits up to timeout_ms until no append or sync is between its start and its end (their I/O
  // runs outside the lock). After SetActive(false), a power cut waits for this before
  // DropUnsyncedData, so that no write lands after the truncation. False on timeout.
  bool WaitForCallsInFlight(int64_t timeout_ms);
  // Truncates every tracked file to its durable size (plus a random part of the rest when
  // torn_seed != 0) and deletes tracked files never synced. Forgets all tracking afterwards.
  // REQUIRES: no database is open on this file system (destroy the store first).
  Status DropUnsyncedData(uint64_t torn_seed = 0);

  // ---- injected failures ----
  // What a failing call answers: an I/O error (EIO) or a full disk (ENOSPC, which RocksDB
  // treats differently: IOStatus::NoSpace).
  enum class Injected { kIoError, kNoSpace };
  // After `ok_before` more appends (resp. syncs) succeed, every later one fails with `kind`
  // until ClearFailures(). Appends and syncs of every file count (WAL, MANIFEST, SST, blob).
  void FailAppends(uint64_t ok_before = 0, Injected kind = Injected::kIoError);
  void FailSyncs(uint64_t ok_before = 0, Injected kind = Injected::kIoError);
  // A power cut at a sync: after `ok_before` more syncs succeed, the next Sync/Fsync fails with
  // IOError and turns the file system off at that instant (as SetActive(false)), so the data
  // that sync was to cover, and anything RocksDB tries to write after it, never becomes durable.
  // Follow with: destroy the store; DropUnsyncedData(); SetActive(true).
  void PowerOffAtSync(uint64_t ok_before = 0);
  // Disarms FailAppends, FailSyncs and PowerOffAtSync (an inactive file system stays inactive).
  void ClearFailures();

  // ---- observation ----
  uint64_t append_count() const;    // Append / PositionedAppend calls that succeeded
  uint64_t sync_count() const;      // Sync / Fsync calls that succeeded
  uint64_t unsynced_bytes() const;  // bytes DropUnsyncedData(0) would drop from tracked files
  // Calls that an armed FailAppends / FailSyncs / PowerOffAtSync made fail. Final once the
  // failures are cleared: a call counts when it is condemned, under the same lock.
  uint64_t injected_count() const;

  // ---- rocksdb::FileSystem overrides ----
  rocksdb::IOStatus NewWritableFile(const std::string& fname, const rocksdb::FileOptions& opts,
                                    std::unique_ptr<rocksdb::FSWritableFile>* result,
                                    rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus ReopenWritableFile(const std::string& fname, const rocksdb::FileOptions& opts,
                                       std::unique_ptr<rocksdb::FSWritableFile>* result,
                                       rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus ReuseWritableFile(const std::string& fname, const std::string& old_fname,
                                      const rocksdb::FileOptions& opts,
                                      std::unique_ptr<rocksdb::FSWritableFile>* result,
                                      rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus NewRandomRWFile(const std::string& fname, const rocksdb::FileOptions& opts,
                                    std::unique_ptr<rocksdb::FSRandomRWFile>* result,
                                    rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus DeleteFile(const std::string& fname, const rocksdb::IOOptions& opts,
                               rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus RenameFile(const std::string& src, const std::string& dst,
                               const rocksdb::IOOptions& opts,
                               rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus LinkFile(const std::string& src, const std::string& dst,
                             const rocksdb::IOOptions& opts, rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus Truncate(const std::string& fname, size_t size, const rocksdb::IOOptions& opts,
                             rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus CreateDir(const std::string& dirname, const rocksdb::IOOptions& opts,
                              rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus CreateDirIfMissing(const std::string& dirname, const rocksdb::IOOptions& opts,
                                       rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus DeleteDir(const std::string& dirname, const rocksdb::IOOptions& opts,
                              rocksdb::IODebugContext* dbg) override;

 private:
  rocksdb::IOStatus CheckActive() const;
  rocksdb::IOStatus Wrap(const std::string& fname, uint64_t durable_bytes, bool ever_synced,
                         std::unique_ptr<rocksdb::FSWritableFile>* file);

  // Shared with the open files: a file may outlive its FaultFs entry (rename, delete).
  std::shared_ptr<fault_fs_internal::Shared> shared_;
};

}  // namespace tw
