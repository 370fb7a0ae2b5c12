// The prefix-sorted memtable representation (storage/prefix_sorted_rep.h) under a real RocksDB:
// random puts and deletes of keys built to defeat an 8-byte prefix sort (short keys, keys that
// differ only in trailing zero bytes, keys sharing their first 8 bytes), checked against a
// std::map through every iterator operation, through snapshots (versions of one key must stay
// in sequence order), and through flushes, which fail on out-of-order keys
// (check_flush_compaction_key_order). A flush runs on RocksDB's background thread while the
// test thread reads, so the suite also runs under TSan.
// tw-test-labels: threads
#include "storage/prefix_sorted_rep.h"

#include <gtest/gtest.h>
#include <rocksdb/db.h>
#include <rocksdb/memtablerep.h>
#include <rocksdb/options.h>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "tests/storage/store_test_util.h"

namespace tw {
namespace {

using Model = std::map<std::string, std::string>;

class PrefixSortedRepTest : public ::testing::Test {
 protected:
  void SetUp() override {
    rocksdb::Options o;
    o.create_if_missing = true;
    o.allow_concurrent_memtable_write = false;
    o.memtable_factory = NewPrefixSortedRepFactory();
    o.check_flush_compaction_key_order = true;  // a flush of unsorted keys fails
    o.disable_auto_compactions = true;
    rocksdb::DB* raw = nullptr;
    auto s = rocksdb::DB::Open(o, dir_.path(), &raw);
    ASSERT_TRUE(s.ok()) << s.ToString();
    db_.reset(raw);
  }
  void TearDown() override {
    if (db_) {
      EXPECT_TRUE(db_->Close().ok());
    }
  }

  // Keys from a small alphabet with many zero bytes and lengths around 8, so that prefixes
  // collide often and zero padding matters ("a" < "a\0" < "a\0\0" ...).
  std::string RandomKey() {
    static const char kAlphabet[] = {'\0', '\0', '\x01', 'a', 'b', '\xff'};
    std::uniform_int_distribution<int> len(0, 12);
    std::uniform_int_distribution<int> pick(0, sizeof(kAlphabet) - 1);
    std::string k;
    const int n = len(rng_);
    for (int i = 0; i < n; ++i) k.push_back(kAlphabet[pick(rng_)]);
    return k;
  }

  // The whole key space in both directions, and Seek / SeekForPrev at random targets.
  void ExpectMatches(const Model& model, const rocksdb::Snapshot* snapshot = nullptr) {
    rocksdb::ReadOptions ro;
    ro.snapshot = snapshot;
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro));
    Model forward;
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      forward.emplace(it->key().ToString(), it->value().ToString());
    }
    ASSERT_TRUE(it->status().ok()) << it->status().ToString();
    EXPECT_EQ(forward, model);
    std::vector<std::string> backward;
    for (it->SeekToLast(); it->Valid(); it->Prev()) backward.push_back(it->key().ToString());
    std::vector<std::string> expected_backward;
    for (auto m = model.rbegin(); m != model.rend(); ++m) expected_backward.push_back(m->first);
    EXPECT_EQ(backward, expected_backward);
    for (int i = 0; i < 50; ++i) {
      const std::string target = RandomKey();
      it->Seek(target);
      auto lb = model.lower_bound(target);
      ASSERT_EQ(it->Valid(), lb != model.end()) << "Seek";
      if (lb != model.end()) {
        EXPECT_EQ(it->key().ToString(), lb->first);
      }
      it->SeekForPrev(target);
      auto ub = model.upper_bound(target);
      ASSERT_EQ(it->Valid(), ub != model.begin()) << "SeekForPrev";
      if (ub != model.begin()) {
        EXPECT_EQ(it->key().ToString(), std::prev(ub)->first);
      }
    }
  }

  testing_util::TempDir dir_{"tw-prefix-rep"};
  std::unique_ptr<rocksdb::DB> db_;
  std::mt19937_64 rng_{20261122};
};

TEST_F(PrefixSortedRepTest, IteratesInKeyOrderBeforeAndAfterFlushes) {
  Model model;
  for (int round = 0; round < 6; ++round) {
    for (int i = 0; i < 3000; ++i) {
      const std::string key = RandomKey();
      if (rng_() % 4 == 0) {
        ASSERT_TRUE(db_->Delete(rocksdb::WriteOptions(), key).ok());
        model.erase(key);
      } else {
        const std::string value = "v" + std::to_string(round) + "." + std::to_string(i);
        ASSERT_TRUE(db_->Put(rocksdb::WriteOptions(), key, value).ok());
        model[key] = value;
      }
    }
    ExpectMatches(model);  // the mutable memtable (a sorted copy) over earlier flushes
    if (HasFatalFailure()) return;
    if (round % 2 == 1) {
      rocksdb::FlushOptions fo;
      auto s = db_->Flush(fo);  // sorts the immutable memtable in place of a copy
      ASSERT_TRUE(s.ok()) << s.ToString();
      ExpectMatches(model);
      if (HasFatalFailure()) return;
    }
  }
  // The keys really did collide: many model keys are shorter than a prefix or share one.
  size_t short_keys = 0;
  for (const auto& [k, v] : model) short_keys += k.size() < 8;
  EXPECT_GT(short_keys, 100u);
}

TEST_F(PrefixSortedRepTest, VersionsOfAKeyStayInSequenceOrder) {
  // Keys sharing one 8-byte prefix, each written many times: only the comparator can order
  // them, and a snapshot must see exactly the versions written before it.
  const std::string prefix("\x00\x01\x02\x03\x04\x05\x06\x07", 8);
  Model model;
  std::vector<std::pair<const rocksdb::Snapshot*, Model>> snapshots;
  for (int i = 0; i < 2000; ++i) {
    const std::string key = prefix + std::to_string(rng_() % 40);
    const std::string value = std::to_string(i);
    ASSERT_TRUE(db_->Put(rocksdb::WriteOptions(), key, value).ok());
    model[key] = value;
    if (i % 400 == 399) snapshots.emplace_back(db_->GetSnapshot(), model);
  }
  ExpectMatches(model);
  for (const auto& [snap, seen] : snapshots) ExpectMatches(seen, snap);
  ASSERT_TRUE(db_->Flush(rocksdb::FlushOptions()).ok());
  ExpectMatches(model);
  for (const auto& [snap, seen] : snapshots) {
    ExpectMatches(seen, snap);
    db_->ReleaseSnapshot(snap);
  }
}

TEST_F(PrefixSortedRepTest, AnIteratorKeepsItsViewWhileWritesGoOn) {
  Model model;
  for (int i = 0; i < 500; ++i) {
    const std::string key = "k" + std::to_string(i);
    ASSERT_TRUE(db_->Put(rocksdb::WriteOptions(), key, "old").ok());
    model[key] = "old";
  }
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
  for (int i = 0; i < 500; ++i) {
    ASSERT_TRUE(db_->Put(rocksdb::WriteOptions(), "k" + std::to_string(i), "new").ok());
    ASSERT_TRUE(db_->Put(rocksdb::WriteOptions(), "z" + std::to_string(i), "new").ok());
  }
  ASSERT_TRUE(db_->Flush(rocksdb::FlushOptions()).ok());  // concurrently with the open iterator
  Model seen;
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    seen.emplace(it->key().ToString(), it->value().ToString());
  }
  EXPECT_EQ(seen, model);
}

}  // namespace
}  // namespace tw
