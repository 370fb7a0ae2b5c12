// FileLogger (storage/file_logger.h): RocksDB's info log, written so that a failed write costs a
// line and nothing else. The full-disk case runs on a tiny tmpfs the test mounts (root only).
#include "storage/file_logger.h"

#include <gtest/gtest.h>
#include <sys/mount.h>
#include <unistd.h>

#include <algorithm>
#include <cstdarg>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "tests/storage/store_test_util.h"

namespace tw {
namespace {

using testing_util::TempDir;

std::string Read(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void Log(FileLogger& logger, const char* format, ...) {
  va_list ap;
  va_start(ap, format);
  logger.Logv(format, ap);
  va_end(ap);
}

TEST(FileLoggerTest, WritesOneTimestampedLinePerCall) {
  TempDir dir;
  FileLogger logger(dir.path() + "/db", 1 << 20, 5);  // creates the missing directory
  Log(logger, "hello %d", 42);
  Log(logger, "second\n");
  const std::string text = Read(dir.path() + "/db/LOG");
  EXPECT_NE(text.find(" hello 42\n"), std::string::npos) << text;
  EXPECT_NE(text.find(" second\n"), std::string::npos) << text;
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 2);
  EXPECT_EQ(logger.GetLogFileSize(), text.size());
}

TEST(FileLoggerTest, EachLoggerStartsItsOwnLog) {
  TempDir dir;
  {
    FileLogger first(dir.path(), 1 << 20, 5);
    Log(first, "first");
  }
  FileLogger second(dir.path(), 1 << 20, 5);
  Log(second, "second");
  EXPECT_EQ(Read(dir.path() + "/LOG").find("first"), std::string::npos);
  size_t old = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir.path())) {
    if (e.path().filename().string().rfind("LOG.old.", 0) == 0) {
      ++old;
      EXPECT_NE(Read(e.path().string()).find("first"), std::string::npos);
    }
  }
  EXPECT_EQ(old, 1u);
}

TEST(FileLoggerTest, RollsOverAndKeepsTheNewestOldFiles) {
  TempDir dir;
  FileLogger logger(dir.path(), 200, 2);
  for (int i = 0; i < 40; ++i) Log(logger, "line %d with some words to fill it", i);
  size_t old = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir.path())) {
    if (e.path().filename().string().rfind("LOG.old.", 0) == 0) ++old;
  }
  EXPECT_EQ(old, 2u);
  EXPECT_LT(std::filesystem::file_size(dir.path() + "/LOG"), 400u);
  EXPECT_NE(Read(dir.path() + "/LOG").find("line 39"), std::string::npos);
}

TEST(FileLoggerTest, AFullDiskLosesLinesNotTheProcess) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to mount a tmpfs";
  TempDir dir;
  ASSERT_EQ(::mount("tmpfs", dir.path().c_str(), "tmpfs", 0, "size=64k"), 0);
  {
    FileLogger logger(dir.path(), 0, 5);
    std::ofstream(dir.path() + "/filler") << std::string(60 << 10, 'f');
    for (int i = 0; i < 200; ++i) Log(logger, "full %d %s", i, std::string(100, 'x').c_str());
    std::filesystem::remove(dir.path() + "/filler");  // room again
    Log(logger, "after");
    EXPECT_NE(Read(dir.path() + "/LOG").find(" after\n"), std::string::npos);
  }
  ::umount2(dir.path().c_str(), MNT_DETACH);
}

}  // namespace
}  // namespace tw
