// FaultFs on its own: what it considers durable, what a power cut leaves, injected failures.
#include "storage/fault_fs.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "tests/storage/store_test_util.h"

namespace tw {
namespace {

using testing_util::TempDir;

class FaultFsTest : public ::testing::Test {
 protected:
  std::string Path(const std::string& name) const { return dir_.path() + "/" + name; }

  std::unique_ptr<rocksdb::FSWritableFile> Create(const std::string& name) {
    std::unique_ptr<rocksdb::FSWritableFile> f;
    auto s = fs_->NewWritableFile(Path(name), rocksdb::FileOptions(), &f, nullptr);
    EXPECT_TRUE(s.ok()) << s.ToString();
    return f;
  }

  static rocksdb::IOStatus Append(rocksdb::FSWritableFile* f, const std::string& data) {
    return f->Append(data, rocksdb::IOOptions(), nullptr);
  }
  static rocksdb::IOStatus Sync(rocksdb::FSWritableFile* f) {
    return f->Sync(rocksdb::IOOptions(), nullptr);
  }
  static void Close(rocksdb::FSWritableFile* f) {
    ASSERT_TRUE(f->Close(rocksdb::IOOptions(), nullptr).ok());
  }

  std::string Read(const std::string& name) const {
    std::ifstream in(Path(name), std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
  bool Exists(const std::string& name) const { return std::filesystem::exists(Path(name)); }

  TempDir dir_;
  std::shared_ptr<FaultFs> fs_ = std::make_shared<FaultFs>();
};

TEST_F(FaultFsTest, DropKeepsSyncedPrefixOnly) {
  auto f = Create("a");
  ASSERT_TRUE(Append(f.get(), "synced|").ok());
  ASSERT_TRUE(Sync(f.get()).ok());
  ASSERT_TRUE(Append(f.get(), "lost").ok());
  // Flush and RangeSync do not make data durable.
  ASSERT_TRUE(f->Flush(rocksdb::IOOptions(), nullptr).ok());
  ASSERT_TRUE(f->RangeSync(0, 100, rocksdb::IOOptions(), nullptr).ok());
  Close(f.get());
  EXPECT_EQ(Read("a"), "synced|lost");
  EXPECT_EQ(fs_->unsynced_bytes(), 4u);
  ASSERT_TRUE(fs_->DropUnsyncedData().ok());
  EXPECT_EQ(Read("a"), "synced|");
}

TEST_F(FaultFsTest, FsyncCountsAsSync) {
  auto f = Create("a");
  ASSERT_TRUE(Append(f.get(), "abc").ok());
  ASSERT_TRUE(f->Fsync(rocksdb::IOOptions(), nullptr).ok());
  Close(f.get());
  EXPECT_EQ(fs_->unsynced_bytes(), 0u);
  ASSERT_TRUE(fs_->DropUnsyncedData().ok());
  EXPECT_EQ(Read("a"), "abc");
}

TEST_F(FaultFsTest, NeverSyncedFilesDisappear) {
  auto f = Create("ghost");
  ASSERT_TRUE(Append(f.get(), "data").ok());
  Close(f.get());
  ASSERT_TRUE(fs_->DropUnsyncedData().ok());
  EXPECT_FALSE(Exists("ghost"));
}

TEST_F(FaultFsTest, PreexistingFilesAreDurable) {
  { std::ofstream(Path("old"), std::ios::binary) << "before"; }
  std::unique_ptr<rocksdb::FSWritableFile> f;
  ASSERT_TRUE(fs_->ReopenWritableFile(Path("old"), rocksdb::FileOptions(), &f, nullptr).ok());
  ASSERT_TRUE(Append(f.get(), "+after").ok());
  Close(f.get());
  ASSERT_TRUE(fs_->DropUnsyncedData().ok());
  EXPECT_EQ(Read("old"), "before");
}

TEST_F(FaultFsTest, RenameCarriesTrackingAndDeleteForgetsIt) {
  auto f = Create("tmp");
  ASSERT_TRUE(Append(f.get(), "x").ok());
  ASSERT_TRUE(Sync(f.get()).ok());
  ASSERT_TRUE(Append(f.get(), "y").ok());
  Close(f.get());
  ASSERT_TRUE(fs_->RenameFile(Path("tmp"), Path("CURRENT"), rocksdb::IOOptions(), nullptr).ok());
  auto g = Create("gone");
  Close(g.get());
  ASSERT_TRUE(fs_->DeleteFile(Path("gone"), rocksdb::IOOptions(), nullptr).ok());
  ASSERT_TRUE(fs_->DropUnsyncedData().ok());
  EXPECT_EQ(Read("CURRENT"), "x");
  EXPECT_FALSE(Exists("tmp"));
  EXPECT_FALSE(Exists("gone"));
}

TEST_F(FaultFsTest, TornDropKeepsAPrefixOfTheUnsyncedTail) {
  for (uint64_t seed = 1; seed <= 20; ++seed) {
    auto f = Create("t");
    ASSERT_TRUE(Append(f.get(), "0123").ok());
    ASSERT_TRUE(Sync(f.get()).ok());
    ASSERT_TRUE(Append(f.get(), "456789").ok());
    Close(f.get());
    ASSERT_TRUE(fs_->DropUnsyncedData(seed).ok());
    std::string got = Read("t");
    EXPECT_GE(got.size(), 4u);
    EXPECT_EQ(got, std::string("0123456789").substr(0, got.size()));
  }
}

TEST_F(FaultFsTest, InactiveFileSystemChangesNothing) {
  auto f = Create("a");
  ASSERT_TRUE(Append(f.get(), "kept").ok());
  ASSERT_TRUE(Sync(f.get()).ok());
  fs_->SetActive(false);
  EXPECT_FALSE(Append(f.get(), "more").ok());
  EXPECT_FALSE(Sync(f.get()).ok());
  EXPECT_FALSE(f->Close(rocksdb::IOOptions(), nullptr).ok());
  std::unique_ptr<rocksdb::FSWritableFile> g;
  EXPECT_FALSE(fs_->NewWritableFile(Path("b"), rocksdb::FileOptions(), &g, nullptr).ok());
  EXPECT_FALSE(fs_->DeleteFile(Path("a"), rocksdb::IOOptions(), nullptr).ok());
  EXPECT_FALSE(fs_->RenameFile(Path("a"), Path("c"), rocksdb::IOOptions(), nullptr).ok());
  EXPECT_EQ(Read("a"), "kept");
  EXPECT_FALSE(Exists("b"));
  fs_->SetActive(true);
  ASSERT_TRUE(Append(f.get(), "!").ok());
  Close(f.get());
  EXPECT_EQ(Read("a"), "kept!");
}

TEST_F(FaultFsTest, InjectedFailuresAfterCountdownUntilCleared) {
  auto f = Create("a");
  fs_->FailAppends(2);
  EXPECT_TRUE(Append(f.get(), "1").ok());
  EXPECT_TRUE(Append(f.get(), "2").ok());
  rocksdb::IOStatus s = Append(f.get(), "3");
  EXPECT_TRUE(s.IsIOError());
  EXPECT_NE(s.ToString().find("injected append failure"), std::string::npos);
  EXPECT_FALSE(Append(f.get(), "4").ok());
  EXPECT_TRUE(Sync(f.get()).ok());  // syncs are armed separately
  fs_->FailSyncs(0);
  EXPECT_FALSE(Sync(f.get()).ok());
  fs_->ClearFailures();
  EXPECT_TRUE(Append(f.get(), "5").ok());
  EXPECT_TRUE(Sync(f.get()).ok());
  Close(f.get());
  EXPECT_EQ(Read("a"), "125");  // failed appends wrote nothing
  EXPECT_EQ(fs_->append_count(), 3u);
  EXPECT_EQ(fs_->sync_count(), 2u);
}

}  // namespace
}  // namespace tw
