#include "storage/rocksdb_open.h"

#include <rocksdb/db.h>
#include <rocksdb/env.h>
#include <rocksdb/iterator.h>

#include <algorithm>
#include <cstdarg>
#include <set>
#include <string>
#include <vector>

#include "engine/assert.h"
#include "storage/codec.h"
#include "storage/prefix_sorted_rep.h"
#include "storage/rocksdb_convert.h"

namespace tw::rocks {
namespace {

// Keeps the read-only probe at open from rotating the database's LOG file: "no changes" means
// no file of the directory changes.
class NullLogger final : public rocksdb::Logger {
 public:
  using rocksdb::Logger::Logv;
  void Logv(const char* /*format*/, va_list /*ap*/) override {}
};

// Opens an existing database read-only with a silent logger, so that refusing it changes no
// file (not even LOG). Read-only opens replay the WAL, so the probes open only what they need.
class ReadOnlyDb {
 public:
  Status Open(const std::string& path, rocksdb::Env* env, const std::vector<Cf>& cfs) {
    rocksdb::DBOptions o = MakeDbOptions(env);
    o.info_log = std::make_shared<NullLogger>();
    std::vector<rocksdb::ColumnFamilyDescriptor> descs;
    for (Cf cf : cfs) descs.emplace_back(kCfNames[cf], rocksdb::ColumnFamilyOptions());
    rocksdb::DB* raw = nullptr;
    auto s = rocksdb::DB::OpenForReadOnly(o, path, descs, &handles_, &raw);
    db_.reset(raw);
    return FromRocks(s);
  }
  ~ReadOnlyDb() {
    if (db_ == nullptr) return;
    for (auto* h : handles_) db_->DestroyColumnFamilyHandle(h);
    db_->Close().PermitUncheckedError();  // read-only: nothing to lose
  }
  rocksdb::DB* db() const { return db_.get(); }
  rocksdb::ColumnFamilyHandle* handle(size_t i) const { return handles_[i]; }
  size_t size() const { return handles_.size(); }

 private:
  std::unique_ptr<rocksdb::DB> db_;
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;
};

// The existing database's column families must be exactly kCfNames: a missing one means it is
// not (or no longer) a tokenwheel database, an unknown one that a newer format wrote it.
Status CheckColumnFamilies(const std::string& path, rocksdb::Env* env) {
  std::vector<std::string> names;
  auto s = rocksdb::DB::ListColumnFamilies(MakeDbOptions(env), path, &names);
  if (!s.ok()) return FromRocks(s);
  std::set<std::string> have(names.begin(), names.end());
  for (const char* want : kCfNames) {
    if (have.erase(want) == 0) {
      return Status::InvalidArgument(path + ": missing column family '" + want +
                                     "'; not a tokenwheel database, refusing to open");
    }
  }
  if (!have.empty()) {
    return Status::InvalidArgument(path + ": unknown column family '" + *have.begin() +
                                   "' (written by a newer tokenwheel?); refusing to open");
  }
  return Status::Ok();
}

// Reads the format version of an existing database (meta column family only).
Status ProbeFormatVersion(const std::string& path, rocksdb::Env* env, bool* found,
                          uint32_t* version) {
  ReadOnlyDb ro;
  Status st = ro.Open(path, env, {kDefault, kMeta});
  if (!st.ok()) return st;
  std::string value;
  auto s = ro.db()->Get(rocksdb::ReadOptions(), ro.handle(1), codec::kMetaFormatVersion, &value);
  *found = s.ok();
  if (s.IsNotFound()) return Status::Ok();
  if (!s.ok()) return FromRocks(s);
  return codec::DecodeFormatVersion(value, version);
}

// A sealed database (version 3) holds values only payload keys can read: without them the open
// is refused here, before anything changes, rather than at the first read of such a value.
Status CheckVersionReadable(const std::string& path, uint32_t version, bool have_payload_keys) {
  if (version == kFormatVersionSealed && !have_payload_keys) {
    return Status::InvalidArgument(
        path + ": the database holds encrypted payloads (format version " +
        std::to_string(version) +
        "); give the payload key file that lists their keys (--payload-key-file); refusing to "
        "open");
  }
  if (version == kFormatVersion || version == kFormatVersionReadable ||
      version == kFormatVersionSealed) {
    return Status::Ok();
  }
  return Status::InvalidArgument(path + ": on-disk format version " + std::to_string(version) +
                                 " is not a version this build reads (" +
                                 std::to_string(kFormatVersionReadable) + ".." +
                                 std::to_string(kFormatVersionSealed) + "); refusing to open");
}

// A database without a format version is accepted only if every column family is empty: that
// is a creation that crashed before its version write was synced. Anything else is refused.
Status ProbeEmpty(const std::string& path, rocksdb::Env* env) {
  ReadOnlyDb ro;
  std::vector<Cf> all;
  for (size_t cf = 0; cf < kCfCount; ++cf) all.push_back(static_cast<Cf>(cf));
  Status st = ro.Open(path, env, all);
  if (!st.ok()) return st;
  for (size_t i = 0; i < ro.size(); ++i) {
    std::unique_ptr<rocksdb::Iterator> it(
        ro.db()->NewIterator(rocksdb::ReadOptions(), ro.handle(i)));
    it->SeekToFirst();
    if (!it->status().ok()) return FromRocks(it->status());
    if (it->Valid()) {
      return Status::Corruption(path +
                                ": database has data but no format version in meta; "
                                "refusing to open");
    }
  }
  return Status::Ok();
}

// The checks of an existing database, which change nothing: column families, then the format
// version, or emptiness where there is none.
Status CheckExisting(const std::string& path, rocksdb::Env* env, bool have_payload_keys,
                     bool* version_found) {
  Status s = CheckColumnFamilies(path, env);
  if (!s.ok()) return s;
  uint32_t version = 0;
  s = ProbeFormatVersion(path, env, version_found, &version);
  if (!s.ok()) return s;
  return *version_found ? CheckVersionReadable(path, version, have_payload_keys)
                        : ProbeEmpty(path, env);
}

// The bytes in the database's WAL files (`NNNNNN.log`).
Status WalBytes(const std::string& path, rocksdb::Env* env, uint64_t* bytes) {
  *bytes = 0;
  std::vector<std::string> children;
  auto s = env->GetChildren(path, &children);
  if (!s.ok()) return FromRocks(s);
  for (const std::string& name : children) {
    if (name.size() <= 4 || name.compare(name.size() - 4, 4, ".log") != 0) continue;
    if (!std::all_of(name.begin(), name.end() - 4, [](char c) { return c >= '0' && c <= '9'; })) {
      continue;
    }
    uint64_t size = 0;
    s = env->GetFileSize(path + "/" + name, &size);
    if (!s.ok()) return FromRocks(s);
    *bytes += size;
  }
  return Status::Ok();
}

// The preliminary open of RocksStoreOptions::replay_open_min_wal_bytes: replays the WAL with the
// prefix-sorted vector memtable for `tasks` too; RocksDB flushes every replayed memtable to L0
// before the open returns (avoid_flush_during_recovery is false), and the close leaves no WAL to
// replay. The vector memtable is fine here because nothing reads it before that flush; it is not
// fine for the real open, whose `tasks` memtable serves point reads.
Status ReplayWalIntoTables(const RocksStoreOptions& options, rocksdb::Env* env) {
  std::vector<rocksdb::ColumnFamilyDescriptor> descs = MakeCfDescriptors(options);
  descs[kTasks].options.memtable_factory = NewPrefixSortedRepFactory();
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* raw = nullptr;
  auto s = rocksdb::DB::Open(MakeWritableDbOptions(env, options.path), options.path, descs,
                             &handles, &raw);
  if (!s.ok()) return FromRocks(s);
  std::unique_ptr<rocksdb::DB> db(raw);
  for (auto* h : handles) db->DestroyColumnFamilyHandle(h);
  return FromRocks(db->Close());
}

Status ReplayWalIfLarge(const RocksStoreOptions& options, rocksdb::Env* env) {
  uint64_t wal_bytes = 0;
  Status s = WalBytes(options.path, env, &wal_bytes);
  if (!s.ok()) return s;
  if (wal_bytes == 0 || wal_bytes < options.replay_open_min_wal_bytes) return Status::Ok();
  return ReplayWalIntoTables(options, env);
}

Status WriteFormatVersion(rocksdb::DB* db, const CfHandles& cfs, uint32_t version) {
  rocksdb::WriteOptions wo;
  wo.sync = true;
  std::string encoded;
  codec::EncodeFormatVersion(version, &encoded);
  return FromRocks(db->Put(wo, cfs[kMeta], codec::kMetaFormatVersion, encoded));
}

// `value` is the probe's version, one CheckVersionReadable accepted. A version below `target`
// is marked `target` now (1 -> 2, and 1 or 2 -> 3 when payload keys are given).
Status CheckOrUpgradeVersion(rocksdb::DB* db, const CfHandles& cfs, std::string_view value,
                             uint32_t target) {
  uint32_t version = 0;
  Status s = codec::DecodeFormatVersion(value, &version);
  if (!s.ok()) return s;
  if (version == target) return Status::Ok();
  if (version < target) return WriteFormatVersion(db, cfs, target);
  // The probe refused a sealed database without keys; a mismatch now is a concurrent writer or
  // a bug.
  return Status::Corruption("format version changed at open");
}

Status AllEmpty(rocksdb::DB* db, const CfHandles& cfs, bool* empty) {
  *empty = true;
  for (size_t cf = 0; cf < kCfCount && *empty; ++cf) {
    std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(rocksdb::ReadOptions(), cfs[cf]));
    it->SeekToFirst();
    if (it->Valid()) *empty = false;
    if (!it->status().ok()) return FromRocks(it->status());
  }
  return Status::Ok();
}

}  // namespace

void LowerBackgroundPriority(rocksdb::Env* env) {
  env->LowerThreadPoolCPUPriority(rocksdb::Env::Priority::HIGH, rocksdb::CpuPriority::kLow)
      .PermitUncheckedError();
  env->LowerThreadPoolCPUPriority(rocksdb::Env::Priority::LOW, rocksdb::CpuPriority::kLow)
      .PermitUncheckedError();
}

Status PrepareOpen(const RocksStoreOptions& options, rocksdb::Env* env, OpenPlan* plan) {
  auto exists = env->FileExists(options.path + "/CURRENT");
  if (!exists.ok() && !exists.IsNotFound()) return FromRocks(exists);
  plan->create = exists.IsNotFound();
  plan->version_expected = false;
  if (plan->create) return Status::Ok();
  Status s =
      CheckExisting(options.path, env, !options.payload_keys.empty(), &plan->version_expected);
  if (!s.ok()) return s;
  return ReplayWalIfLarge(options, env);
}

Status OpenDb(const RocksStoreOptions& options, rocksdb::Env* env, bool create,
              std::shared_ptr<rocksdb::EventListener> listener, std::unique_ptr<rocksdb::DB>* db,
              CfHandles* cfs) {
  rocksdb::DBOptions o = MakeWritableDbOptions(env, options.path);
  if (listener) o.listeners.push_back(std::move(listener));
  o.create_if_missing = create;
  o.create_missing_column_families = create;
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* raw = nullptr;
  auto s = rocksdb::DB::Open(o, options.path, MakeCfDescriptors(options), &handles, &raw);
  if (!s.ok()) return FromRocks(s);
  db->reset(raw);
  TW_ASSERT(handles.size() == kCfCount);
  std::copy(handles.begin(), handles.end(), cfs->begin());
  return Status::Ok();
}

Status CheckOrWriteFormatVersion(rocksdb::DB* db, const CfHandles& cfs, bool version_expected,
                                 bool sealed) {
  const uint32_t target = sealed ? kFormatVersionSealed : kFormatVersion;
  rocksdb::PinnableSlice value;
  auto s = db->Get(rocksdb::ReadOptions(), cfs[kMeta], codec::kMetaFormatVersion, &value);
  if (s.ok()) return CheckOrUpgradeVersion(db, cfs, View(value), target);
  if (!s.IsNotFound()) return FromRocks(s);
  if (version_expected) return Status::Corruption("format version vanished at open");
  bool empty = false;
  Status st = AllEmpty(db, cfs, &empty);
  if (!st.ok()) return st;
  if (!empty) return Status::Corruption("database has data but no format version in meta");
  return WriteFormatVersion(db, cfs, target);
}

}  // namespace tw::rocks
