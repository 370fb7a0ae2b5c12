// A real full disk under a real tokenwheeld: the data dir on a small tmpfs that the test mounts
// (root only; skipped otherwise), filled with task inputs until writes fail. The server must
// stay up and refuse calls with a typed ServiceUnavailable (CLI exit 2) while ping and stats say
// why; once the tmpfs is made bigger it must recover by itself within seconds, with every
// acknowledged issue there, and stop promptly on SIGTERM in every state. The same failure at
// every write and sync point, through RocksDB on a fault-injecting file system:
// tests/storage/storage_failure_test.cc.
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <unistd.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "rpc/client.h"
#include "tests/rpc/test_support.h"

namespace tw::rpc::testing {
namespace {

constexpr int kTmpfsMiB = 24;
constexpr int kBiggerTmpfsMiB = 96;
constexpr size_t kInputBytes = 100 << 10;
constexpr int kIssuesMax = 2000;             // far more than fit in kTmpfsMiB
constexpr int64_t kRecoveryGoalMs = 10'000;  // "within seconds"

// A tmpfs of `mib` MiB mounted on a fresh dir; unmounted (lazily) at destruction.
class Tmpfs {
 public:
  explicit Tmpfs(int mib) {
    if (::geteuid() != 0) return;
    if (::mount("tmpfs", dir_.path().c_str(), "tmpfs", 0, Options(mib).c_str()) == 0) {
      mounted_ = true;
    }
  }
  ~Tmpfs() {
    if (mounted_) ::umount2(dir_.path().c_str(), MNT_DETACH);
  }
  bool mounted() const { return mounted_; }
  const std::string& path() const { return dir_.path(); }
  bool Resize(int mib) {
    return ::mount("tmpfs", dir_.path().c_str(), "tmpfs", MS_REMOUNT, Options(mib).c_str()) == 0;
  }

 private:
  static std::string Options(int mib) { return "size=" + std::to_string(mib) + "m,mode=0700"; }
  TempDir dir_;
  bool mounted_ = false;
};

class DiskFullTest : public ::testing::Test {
 protected:
  void SetUp() override {
    tmpfs_ = std::make_unique<Tmpfs>(kTmpfsMiB);
    if (!tmpfs_->mounted()) GTEST_SKIP() << "needs root to mount a tmpfs";
  }

  std::unique_ptr<ServerProcess> StartServer(int64_t retry_ms) {
    auto server = std::make_unique<ServerProcess>(
        tmpfs_->path() + "/data", logs_.path() + "/server.log",
        std::vector<std::string>{"--storage-retry-ms", std::to_string(retry_ms)});
    if (!server->Start()) return nullptr;
    return server;
  }

  static std::string Input(int i) {
    std::string s = "\"" + std::to_string(i) + ":";
    s.append(kInputBytes, 'x');
    return s + "\"";
  }

  // Issues callback tasks until the disk is full. Returns the acknowledged tokens by key.
  std::vector<std::pair<std::string, std::string>> FillDisk(Client* client, Error* refusal) {
    std::vector<std::pair<std::string, std::string>> acked;
    for (int i = 0; i < kIssuesMax; ++i) {
      IssueTaskRequest req;
      req.input = Input(i);
      req.timeout_s = 3600;
      req.idempotency_key = "k" + std::to_string(i);
      Result<IssueTaskReply> r = client->IssueTask(req);
      if (!r.ok()) {
        *refusal = r.error;
        return acked;
      }
      acked.emplace_back(req.idempotency_key, r.value.token);
    }
    ADD_FAILURE() << "the disk never filled";
    return acked;
  }

  CliResult Cli(const ServerProcess& server, std::vector<std::string> args) {
    args.insert(args.begin(), {"--server", server.address()});
    return RunCli(args, logs_.path() + "/cli.out");
  }

  TempDir logs_;
  std::unique_ptr<Tmpfs> tmpfs_;
};

TEST_F(DiskFullTest, RefusesWhileFullAndRecoversByItselfWhenSpaceReturns) {
  std::unique_ptr<ServerProcess> server = StartServer(/*retry_ms=*/200);
  ASSERT_NE(server, nullptr);
  auto connected = Client::Connect(server->address());
  ASSERT_TRUE(connected.ok()) << connected.error.message;
  std::unique_ptr<Client> client = std::move(connected.value);

  Error refusal;
  const auto acked = FillDisk(client.get(), &refusal);
  ASSERT_GT(acked.size(), 10u);
  EXPECT_EQ(refusal.code, ErrorCode::kUnavailable) << refusal.message;
  EXPECT_FALSE(refusal.transport) << "a typed answer, not a dropped connection\n" << server->Log();
  EXPECT_NE(refusal.message.find("No space left on device"), std::string::npos) << refusal.message;
  ASSERT_TRUE(server->Running()) << server->Log();

  // Down: ping and stats say why; calls are refused, typed (CLI exit 2).
  Result<PingReply> ping = client->Ping("p");
  ASSERT_TRUE(ping.ok()) << ping.error.message;
  EXPECT_FALSE(ping.value.storage.ok);
  EXPECT_NE(ping.value.storage.error.find("No space left on device"), std::string::npos);
  Result<ServerStats> stats = client->Stats();
  ASSERT_TRUE(stats.ok()) << stats.error.message;
  EXPECT_FALSE(stats.value.engine.storage.ok);
  CliResult cli = Cli(*server, {"task", "issue", "--callback"});
  EXPECT_EQ(cli.exit_code, 2) << cli.out << cli.err;
  EXPECT_NE(cli.out.find("ServiceUnavailable"), std::string::npos) << cli.out;
  cli = Cli(*server, {"ping"});
  EXPECT_EQ(cli.exit_code, 2) << cli.out << cli.err;
  EXPECT_NE(cli.out.find("No space left on device"), std::string::npos) << cli.out;

  // Space returns: recovered within seconds, without a restart.
  ASSERT_TRUE(tmpfs_->Resize(kBiggerTmpfsMiB));
  const int64_t t0 = NowMs();
  const bool healthy = WaitUntil(
      [&]() {
        Result<PingReply> p = client->Ping("p");
        return p.ok() && p.value.storage.ok;
      },
      60'000);
  ASSERT_TRUE(healthy) << server->Log();
  EXPECT_LT(NowMs() - t0, kRecoveryGoalMs);
  EXPECT_NE(server->Log().find("storage works again"), std::string::npos) << server->Log();

  // Every acknowledged issue is there, once.
  for (const auto& [key, token] : acked) {
    Result<TaskDescription> d = client->DescribeTask(token);
    ASSERT_TRUE(d.ok()) << key << ": " << d.error.message;
    EXPECT_EQ(d.value.state, TaskState::kStarted);
  }
  IssueTaskRequest again;
  again.idempotency_key = acked.back().first;
  Result<IssueTaskReply> same = client->IssueTask(again);
  ASSERT_TRUE(same.ok()) << same.error.message;
  EXPECT_TRUE(same.value.existing);
  EXPECT_EQ(same.value.token, acked.back().second);
  Result<IssueTaskReply> fresh = client->IssueTask(IssueTaskRequest{});
  EXPECT_TRUE(fresh.ok()) << fresh.error.message;

  client.reset();
  EXPECT_EQ(server->Terminate(), 0) << server->Log();
}

TEST_F(DiskFullTest, StopsPromptlyWhileFailedAndAfterSpaceReturns) {
  // A retry far in the future: the server stays down, space or not.
  std::unique_ptr<ServerProcess> server = StartServer(/*retry_ms=*/3'600'000);
  ASSERT_NE(server, nullptr);
  auto connected = Client::Connect(server->address());
  ASSERT_TRUE(connected.ok()) << connected.error.message;
  Error refusal;
  const auto acked = FillDisk(connected.value.get(), &refusal);
  ASSERT_EQ(refusal.code, ErrorCode::kUnavailable) << refusal.message;
  connected.value.reset();
  ASSERT_TRUE(tmpfs_->Resize(kBiggerTmpfsMiB));
  const int64_t t0 = NowMs();
  EXPECT_EQ(server->Terminate(), 0) << server->Log();
  EXPECT_LT(NowMs() - t0, 10'000) << "SIGTERM after the disk got its space back";

  // A restart finds every acknowledged issue.
  server = StartServer(/*retry_ms=*/200);
  ASSERT_NE(server, nullptr);
  connected = Client::Connect(server->address());
  ASSERT_TRUE(connected.ok());
  for (const auto& [key, token] : acked) {
    Result<TaskDescription> d = connected.value->DescribeTask(token);
    EXPECT_TRUE(d.ok()) << key << ": " << d.error.message;
  }
  connected.value.reset();
  EXPECT_EQ(server->Terminate(), 0);
}

}  // namespace
}  // namespace tw::rpc::testing
