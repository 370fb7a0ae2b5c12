// Encryption at rest of task payloads (storage/payload_cipher.h, docs/OPERATIONS.md
// "Encryption at rest"): through a real RocksStore, the bytes on disk, key rotation, moved and
// altered ciphertexts, plain records from before, the format version, and the key file.
// Every Store semantic also runs sealed: store_semantics_test.cc, RocksSealed.
#include <gtest/gtest.h>
#include <rocksdb/db.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <random>
#include <string>

#include "engine/key_file.h"
#include "storage/codec.h"
#include "storage/payload_cipher.h"
#include "storage/rocksdb_store_testing.h"
#include "tests/storage/store_test_util.h"

namespace tw {
namespace {

using testing_util::Event;
using testing_util::Id;
using testing_util::Issue;
using testing_util::State;
using testing_util::TempDir;
using testing_util::TestPayloadKeys;

// A payload that no other byte sequence in the database could contain by chance.
const std::string kSecretInput = "{\"card\":\"4111-SECRET-INPUT-7f3a9c\"}";
const std::string kSecretOutput = "{\"ok\":\"SECRET-OUTPUT-b81d2e\"}";
const std::string kSecretCause = "SECRET-CAUSE-55e0c4";

TaskIssueRecord SecretIssue(uint64_t i) {
  TaskIssueRecord r = Issue(i);
  r.input = kSecretInput;
  return r;
}

TaskStateRecord SecretEnd(uint64_t i) {
  TaskStateRecord r = State(i, TaskState::kFailed);
  r.started_ms = 0;
  r.worker.clear();
  r.cause = kSecretCause;
  return r;
}

EventRecord SecretEvent(uint64_t seq) {
  EventRecord e = Event(seq);
  e.state = TaskState::kSucceeded;
  e.has_error = false;
  e.error.clear();
  e.output = kSecretOutput;
  return e;
}

std::string TaskKey(const TaskId& id, codec::TaskKeyKind kind) {
  char key[codec::kTaskKeyBytes];
  codec::EncodeTaskKey(id, kind, key);
  return std::string(key, sizeof(key));
}

std::string FileBytes(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Raw RocksDB access to a closed store's database, to look at and tamper with its values.
class RawDb {
 public:
  explicit RawDb(const std::string& path) {
    const std::vector<std::string> names = {"default", "tasks",   "live",       "idem",
                                            "events",  "retired", "activities", "meta"};
    std::vector<rocksdb::ColumnFamilyDescriptor> descs;
    for (const auto& name : names) descs.emplace_back(name, rocksdb::ColumnFamilyOptions());
    rocksdb::DB* raw = nullptr;
    auto s = rocksdb::DB::Open(rocksdb::DBOptions(), path, descs, &handles_, &raw);
    EXPECT_TRUE(s.ok()) << s.ToString();
    db_.reset(raw);
    for (size_t i = 0; i < names.size(); ++i) by_name_[names[i]] = handles_[i];
  }
  ~RawDb() {
    for (auto* h : handles_) db_->DestroyColumnFamilyHandle(h);
    EXPECT_TRUE(db_->Close().ok());
  }
  std::string Get(const std::string& cf, const std::string& key) {
    std::string v;
    auto s = db_->Get(rocksdb::ReadOptions(), by_name_.at(cf), key, &v);
    EXPECT_TRUE(s.ok()) << s.ToString();
    return v;
  }
  void Put(const std::string& cf, const std::string& key, const std::string& value) {
    rocksdb::WriteOptions wo;
    wo.sync = true;
    auto s = db_->Put(wo, by_name_.at(cf), key, value);
    ASSERT_TRUE(s.ok()) << s.ToString();
  }

 private:
  std::unique_ptr<rocksdb::DB> db_;
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;
  std::map<std::string, rocksdb::ColumnFamilyHandle*> by_name_;
};

std::string SeqKey(uint64_t seq) {
  char key[codec::kSeqKeyBytes];
  codec::EncodeSeqKey(seq, key);
  return std::string(key, sizeof(key));
}

uint32_t StoredFormatVersion(RawDb* raw) {
  uint32_t version = 0;
  EXPECT_TRUE(codec::DecodeFormatVersion(raw->Get("meta", "format_version"), &version).ok());
  return version;
}

class PayloadCryptTest : public ::testing::Test {
 protected:
  std::string path() const { return dir_.path() + "/db"; }

  Status Open(keyfile::KeyList keys, std::unique_ptr<Store>* store, bool flush_on_close = true) {
    RocksStoreOptions o;
    o.path = path();
    o.payload_keys = std::move(keys);
    RocksStoreTestHooks hooks;
    hooks.flush_on_close = flush_on_close;
    return OpenRocksStoreForTesting(o, hooks, store);
  }

  std::unique_ptr<Store> OpenOk(keyfile::KeyList keys, bool flush_on_close = true) {
    std::unique_ptr<Store> store;
    Status s = Open(std::move(keys), &store, flush_on_close);
    EXPECT_TRUE(s.ok()) << s.ToString();
    return store;
  }

  // Task i issued and ended (FAILED with the secret cause), and event i (the secret output).
  void WriteTask(Store* store, uint64_t i) {
    auto b = store->NewBatch();
    b->PutTaskIssue(Id(i), SecretIssue(i));
    b->PutTaskEnd(Id(i), SecretEnd(i));
    b->AppendEvent(SecretEvent(i));
    ASSERT_TRUE(store->Write(b.get(), true).ok());
  }

  void ExpectTaskReads(Store* store, uint64_t i) {
    TaskIssueRecord issue;
    Status s = store->GetTaskIssue(Id(i), &issue);
    ASSERT_TRUE(s.ok()) << s.ToString();
    EXPECT_EQ(issue, SecretIssue(i));
    TaskStateRecord end;
    s = store->GetTaskEnd(Id(i), &end);
    ASSERT_TRUE(s.ok()) << s.ToString();
    EXPECT_EQ(end, SecretEnd(i));
    std::vector<EventRecord> events;
    s = store->ReadEvents(i, 1, &events);
    ASSERT_TRUE(s.ok()) << s.ToString();
    ASSERT_EQ(events.size(), 1u);
    EXPECT_EQ(events[0], SecretEvent(i));
  }

  // The raw value under `key` in column family `cf`, read with the store closed.
  std::string RawGet(const std::string& cf, const std::string& key) {
    RawDb raw(path());
    return raw.Get(cf, key);
  }

  void RawPut(const std::string& cf, const std::string& key, const std::string& value) {
    RawDb raw(path());
    raw.Put(cf, key, value);
  }

  TempDir dir_;
};

TEST_F(PayloadCryptTest, RoundTripsThroughARealStoreAndAReopen) {
  {
    auto store = OpenOk(TestPayloadKeys({1}));
    WriteTask(store.get(), 1);
    ExpectTaskReads(store.get(), 1);  // from the memtable
  }
  auto store = OpenOk(TestPayloadKeys({1}));
  ExpectTaskReads(store.get(), 1);  // from the tables
}

// Every value that holds a payload is an envelope; and no file of the directory (the WAL and
// the tables alike, the LOG too) holds a payload's plaintext.
TEST_F(PayloadCryptTest, NoPlaintextOfAPayloadReachesAnyFile) {
  {
    auto store = OpenOk(TestPayloadKeys({1}), /*flush_on_close=*/false);
    WriteTask(store.get(), 1);
  }
  for (int pass = 0; pass < 2; ++pass) {  // 0: only in the WAL; 1: flushed into tables
    size_t files = 0;
    for (const auto& e : std::filesystem::recursive_directory_iterator(dir_.path())) {
      if (!e.is_regular_file()) continue;
      ++files;
      const std::string bytes = FileBytes(e.path());
      for (const std::string& secret : {kSecretInput, kSecretOutput, kSecretCause}) {
        EXPECT_EQ(bytes.find(secret), std::string::npos) << e.path() << " holds " << secret;
      }
    }
    EXPECT_GT(files, 3u);
    if (pass == 0) OpenOk(TestPayloadKeys({1})).reset();  // replays the WAL, flushes at close
  }
  RawDb raw(path());
  for (auto kind : {codec::TaskKeyKind::kIssue, codec::TaskKeyKind::kEnd}) {
    const std::string v = raw.Get("tasks", TaskKey(Id(1), kind));
    ASSERT_GE(v.size(), rocks::PayloadCipher::kOverheadBytes);
    EXPECT_EQ(static_cast<uint8_t>(v[0]), rocks::PayloadCipher::kSealedMarker);
    EXPECT_EQ(v[1], 1);  // key id
  }
  EXPECT_EQ(static_cast<uint8_t>(raw.Get("events", SeqKey(1))[0]),
            rocks::PayloadCipher::kSealedMarker);
  EXPECT_EQ(StoredFormatVersion(&raw), kFormatVersionSealed);
}

// Write under key 1; add key 2: old records read under key 1, new ones are written under key 2;
// drop key 1: the old records give a clear error naming key id 1, the new ones still read.
TEST_F(PayloadCryptTest, RotationReadsOldKeysAndWritesUnderTheLast) {
  WriteTask(OpenOk(TestPayloadKeys({1})).get(), 1);
  {
    auto store = OpenOk(TestPayloadKeys({1, 2}));
    ExpectTaskReads(store.get(), 1);
    WriteTask(store.get(), 2);
  }
  {
    RawDb raw(path());
    EXPECT_EQ(raw.Get("tasks", TaskKey(Id(1), codec::TaskKeyKind::kIssue))[1], 1);
    EXPECT_EQ(raw.Get("tasks", TaskKey(Id(2), codec::TaskKeyKind::kIssue))[1], 2);
    EXPECT_EQ(raw.Get("events", SeqKey(2))[1], 2);
  }
  auto store = OpenOk(TestPayloadKeys({2}));
  ExpectTaskReads(store.get(), 2);
  TaskIssueRecord issue;
  Status s = store->GetTaskIssue(Id(1), &issue);
  EXPECT_EQ(s.code(), Status::Code::kInvalidArgument) << s.ToString();
  EXPECT_NE(s.message().find("payload key id 1"), std::string::npos) << s.ToString();
  EXPECT_NE(s.message().find("issue record"), std::string::npos) << s.ToString();
  std::vector<EventRecord> events;
  s = store->ReadEvents(1, 1, &events);
  EXPECT_EQ(s.code(), Status::Code::kInvalidArgument) << s.ToString();
  EXPECT_NE(s.message().find("event 1"), std::string::npos) << s.ToString();
  // No key material in the message: not the hex of either key's first bytes.
  for (const auto& [id, key] : TestPayloadKeys({1, 2})) {
    EXPECT_EQ(s.message().find(keyfile::KeyLine(id, key).substr(5, 16)), std::string::npos);
  }
}

TEST_F(PayloadCryptTest, ACiphertextMovedToAnotherRecordFailsAuthentication) {
  {
    auto store = OpenOk(TestPayloadKeys({1}));
    WriteTask(store.get(), 1);
    WriteTask(store.get(), 2);
  }
  const std::string issue1 = RawGet("tasks", TaskKey(Id(1), codec::TaskKeyKind::kIssue));
  const std::string end1 = RawGet("tasks", TaskKey(Id(1), codec::TaskKeyKind::kEnd));
  RawPut("tasks", TaskKey(Id(2), codec::TaskKeyKind::kIssue), issue1);  // another task
  RawPut("tasks", TaskKey(Id(1), codec::TaskKeyKind::kState), end1);    // another field kind
  RawPut("events", SeqKey(2), RawGet("events", SeqKey(1)));             // another event
  auto store = OpenOk(TestPayloadKeys({1}));
  TaskIssueRecord issue;
  Status s = store->GetTaskIssue(Id(2), &issue);
  EXPECT_EQ(s.code(), Status::Code::kCorruption) << s.ToString();
  EXPECT_NE(s.message().find("fails authentication under payload key id 1"), std::string::npos)
      << s.ToString();
  TaskStateRecord state;
  s = store->GetTaskState(Id(1), &state);
  EXPECT_EQ(s.code(), Status::Code::kCorruption) << s.ToString();
  std::vector<EventRecord> events;
  s = store->ReadEvents(2, 1, &events);
  EXPECT_EQ(s.code(), Status::Code::kCorruption) << s.ToString();
  ExpectTaskReads(store.get(), 1);  // the originals still read
}

// Every byte of an envelope is covered: the key id, the nonce, the ciphertext and the tag.
TEST_F(PayloadCryptTest, AFlippedByteAnywhereFailsAndTruncationIsCorruption) {
  WriteTask(OpenOk(TestPayloadKeys({1, 3})).get(), 1);
  const std::string key = TaskKey(Id(1), codec::TaskKeyKind::kIssue);
  const std::string good = RawGet("tasks", key);
  for (size_t at :
       {size_t{1}, size_t{2}, size_t{13}, size_t{14}, good.size() / 2, good.size() - 1}) {
    std::string bad = good;
    bad[at] = static_cast<char>(bad[at] ^ (at == 1 ? 0x02 : 0x01));  // key id 3, else one bit
    RawPut("tasks", key, bad);
    auto store = OpenOk(TestPayloadKeys({1, 3}));
    TaskIssueRecord issue;
    Status s = store->GetTaskIssue(Id(1), &issue);
    EXPECT_EQ(s.code(), Status::Code::kCorruption) << "byte " << at << ": " << s.ToString();
  }
  RawPut("tasks", key, good.substr(0, rocks::PayloadCipher::kOverheadBytes - 1));
  auto store = OpenOk(TestPayloadKeys({1, 3}));
  TaskIssueRecord issue;
  Status s = store->GetTaskIssue(Id(1), &issue);
  EXPECT_EQ(s.code(), Status::Code::kCorruption) << s.ToString();
  EXPECT_NE(s.message().find("truncated"), std::string::npos) << s.ToString();
}

// Turning encryption on: records written plain stay readable as they are, new ones are sealed,
// and the database is marked version 3 so that a store without keys (and an older build)
// refuses it, without changing a file.
TEST_F(PayloadCryptTest, PlainRecordsFromBeforeStayReadableAndTheVersionGuardsTheRest) {
  {
    auto store = OpenOk({});
    auto b = store->NewBatch();
    b->PutTaskIssue(Id(1), Issue(1));
    ASSERT_TRUE(store->Write(b.get(), true).ok());
  }
  {
    RawDb raw(path());
    EXPECT_EQ(StoredFormatVersion(&raw), kFormatVersion);
  }
  {
    auto store = OpenOk(TestPayloadKeys({1}));
    TaskIssueRecord issue;
    ASSERT_TRUE(store->GetTaskIssue(Id(1), &issue).ok());
    EXPECT_EQ(issue, Issue(1));
    WriteTask(store.get(), 2);
  }
  {
    RawDb raw(path());
    EXPECT_EQ(StoredFormatVersion(&raw), kFormatVersionSealed);
    EXPECT_EQ(raw.Get("tasks", TaskKey(Id(1), codec::TaskKeyKind::kIssue))[0],
              codec::kRecordVersion);
  }
  std::map<std::string, uintmax_t> before;
  for (const auto& e : std::filesystem::directory_iterator(path())) {
    before[e.path().filename().string()] = e.file_size();
  }
  std::unique_ptr<Store> store;
  Status s = Open({}, &store);
  EXPECT_EQ(s.code(), Status::Code::kInvalidArgument) << s.ToString();
  EXPECT_NE(s.message().find("encrypted payloads"), std::string::npos) << s.ToString();
  EXPECT_NE(s.message().find("--payload-key-file"), std::string::npos) << s.ToString();
  EXPECT_EQ(store, nullptr);
  std::map<std::string, uintmax_t> after;
  for (const auto& e : std::filesystem::directory_iterator(path())) {
    after[e.path().filename().string()] = e.file_size();
  }
  EXPECT_EQ(after, before);
}

// Open is total: whatever follows the marker, it answers a Status and never aborts.
TEST(PayloadCipherTest, OpenOfArbitraryBytesNeverAborts) {
  rocks::PayloadCipher cipher(TestPayloadKeys({0, 1, 255}));
  std::mt19937_64 rng(42);
  std::string plain;
  const rocks::SealAd ad(rocks::SealAd::kTasks, "k");
  for (int i = 0; i < 2000; ++i) {
    std::string v(rng() % 80, '\0');
    for (char& c : v) c = static_cast<char>(rng());
    if (v.empty()) v.push_back('\0');
    v[0] = static_cast<char>(rocks::PayloadCipher::kSealedMarker);
    if (v.size() > 1 && i % 2 == 0) v[1] = static_cast<char>(i % 4 == 0 ? 1 : 255);
    EXPECT_FALSE(cipher.Open(ad.view(), v, "fuzz", &plain).ok());
  }
  std::string sealed;
  cipher.Seal(ad.view(), "", &sealed);  // an empty payload round-trips too
  EXPECT_EQ(sealed.size(), rocks::PayloadCipher::kOverheadBytes);
  EXPECT_EQ(sealed[1], static_cast<char>(255));  // the last key seals
  plain = "x";
  ASSERT_TRUE(cipher.Open(ad.view(), sealed, "empty", &plain).ok());
  EXPECT_EQ(plain, "");
}

TEST(PayloadCipherTest, TwoSealsOfOneValueDifferInTheirNonce) {
  rocks::PayloadCipher cipher(TestPayloadKeys({1}));
  const rocks::SealAd ad(rocks::SealAd::kEvents, "12345678");
  std::string a;
  std::string b;
  cipher.Seal(ad.view(), kSecretOutput, &a);
  cipher.Seal(ad.view(), kSecretOutput, &b);
  EXPECT_NE(a.substr(2, rocks::PayloadCipher::kNonceBytes),
            b.substr(2, rocks::PayloadCipher::kNonceBytes));
  EXPECT_EQ(a.find(kSecretOutput), std::string::npos);
}

// Each thread caches contexts with their keys set: a new cipher whose key id 1 is another key
// (even at the freed one's address) must not open with the old key, and a failed open must not
// spoil the next one.
TEST(PayloadCipherTest, CachedKeysNeverOutliveTheirCipher) {
  const rocks::SealAd ad(rocks::SealAd::kTasks, "key");
  std::string sealed;
  {
    rocks::PayloadCipher a(TestPayloadKeys({1}));
    a.Seal(ad.view(), kSecretInput, &sealed);
  }
  keyfile::KeyList other = TestPayloadKeys({1});
  other[0].second[0] ^= 0xFF;
  rocks::PayloadCipher b(other);
  std::string plain;
  Status s = b.Open(ad.view(), sealed, "moved", &plain);
  EXPECT_EQ(s.code(), Status::Code::kCorruption) << s.ToString();
  std::string mine;
  b.Seal(ad.view(), kSecretInput, &mine);
  ASSERT_TRUE(b.Open(ad.view(), mine, "mine", &plain).ok());
  EXPECT_EQ(plain, kSecretInput);
  rocks::PayloadCipher a_again(TestPayloadKeys({1}));
  ASSERT_TRUE(a_again.Open(ad.view(), sealed, "again", &plain).ok());
  EXPECT_EQ(plain, kSecretInput);
}

// ---- the payload key file ----

class PayloadKeyFileTest : public ::testing::Test {
 protected:
  std::string file() const { return dir_.path() + "/payload.key"; }
  TempDir dir_;
};

TEST_F(PayloadKeyFileTest, AddKeyCreatesA0600FileThenAppendsTheNextId) {
  uint8_t id = 0;
  ASSERT_TRUE(keyfile::AddKey(file(), "payload key file", "# header\n", -1, &id).ok());
  EXPECT_EQ(id, 1);
  struct stat st {};
  ASSERT_EQ(::stat(file().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ASSERT_TRUE(keyfile::AddKey(file(), "payload key file", "# header\n", -1, &id).ok());
  EXPECT_EQ(id, 2);
  ASSERT_TRUE(keyfile::AddKey(file(), "payload key file", "# header\n", 9, &id).ok());
  EXPECT_EQ(id, 9);
  keyfile::KeyList keys;
  ASSERT_TRUE(LoadPayloadKeyFile(file(), &keys).ok());
  ASSERT_EQ(keys.size(), 3u);
  EXPECT_EQ(keys.back().first, 9);  // the last line: the one that encrypts
  EXPECT_NE(keys[0].second, keys[1].second);
  const std::string before = FileBytes(file());
  Status s = keyfile::AddKey(file(), "payload key file", "# header\n", 2, &id);
  EXPECT_EQ(s.code(), Status::Code::kInvalidArgument) << s.ToString();
  EXPECT_NE(s.message().find("key id 2 is already listed"), std::string::npos);
  EXPECT_EQ(FileBytes(file()), before);
}

TEST_F(PayloadKeyFileTest, AGroupOrOtherReadableFileIsRefused) {
  uint8_t id = 0;
  ASSERT_TRUE(keyfile::AddKey(file(), "payload key file", "", -1, &id).ok());
  ASSERT_EQ(::chmod(file().c_str(), 0640), 0);
  keyfile::KeyList keys;
  Status s = LoadPayloadKeyFile(file(), &keys);
  EXPECT_EQ(s.code(), Status::Code::kInvalidArgument) << s.ToString();
  EXPECT_NE(s.message().find("mode 0640"), std::string::npos) << s.ToString();
  EXPECT_NE(s.message().find("must be 0600"), std::string::npos) << s.ToString();
  EXPECT_TRUE(keys.empty());
  s = keyfile::AddKey(file(), "payload key file", "", -1, &id);  // nor is one added to it
  EXPECT_EQ(s.code(), Status::Code::kInvalidArgument) << s.ToString();
  ASSERT_EQ(::chmod(file().c_str(), 0400), 0);  // stricter than 0600 is fine
  EXPECT_TRUE(LoadPayloadKeyFile(file(), &keys).ok());
  EXPECT_TRUE(LoadPayloadKeyFile(dir_.path() + "/missing.key", &keys).code() ==
              Status::Code::kIoError);
}

}  // namespace
}  // namespace tw
