// Encryption at rest through the real binaries: `tokenwheel keygen` makes the payload key file,
// tokenwheeld --payload-key-file encrypts with it, no file of the data directory holds a
// payload's plaintext afterwards, and the server refuses a key file others can read and a
// database with encrypted payloads started without keys (docs/OPERATIONS.md).
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "tests/rpc/test_support.h"

namespace tw::rpc::testing {
namespace {

using nlohmann::json;

const std::string kSecret = "PAYLOAD-SECRET-3c9e71d0";

std::string FileBytes(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

class PayloadKeyTest : public DaemonTest {
 protected:
  std::string key_file() const { return dir_.path() + "/payload.key"; }

  json Cli(const std::vector<std::string>& args, int exit_code = 0) {
    std::vector<std::string> full = args;
    if (server_ != nullptr) full.insert(full.begin(), {"--server", server_->address()});
    const CliResult r = RunCli(full, dir_.path() + "/cli.out");
    EXPECT_EQ(r.exit_code, exit_code) << r.out << r.err;
    json j = json::parse(r.out, nullptr, false);
    EXPECT_FALSE(j.is_discarded()) << "not JSON: " << r.out << r.err;
    return j;
  }
};

TEST_F(PayloadKeyTest, TheServerEncryptsPayloadsWithTheKeygenKey) {
  json made = Cli({"keygen", "--payload-key-file", key_file()});
  EXPECT_EQ(made["keyId"], 1);
  struct stat st {};
  ASSERT_EQ(::stat(key_file().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  StartServer({"--payload-key-file", key_file()});
  const std::string input = "{\"secret\":\"" + kSecret + "-input\"}";
  json issued = Cli({"task", "issue", "--callback", "--input", input, "--timeout", "600"});
  const std::string token = issued["taskToken"];
  ASSERT_FALSE(token.empty());
  EXPECT_EQ(Cli({"task", "succeed", token, "--output", "{\"o\":\"" + kSecret + "-output\"}"}),
            json::object());
  EXPECT_EQ(Cli({"task", "describe", token})["state"], "SUCCEEDED");
  EXPECT_EQ(server_->Terminate(), 0) << server_->Log();

  size_t files = 0;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir_.path() + "/data")) {
    if (!e.is_regular_file()) continue;
    ++files;
    EXPECT_EQ(FileBytes(e.path()).find(kSecret), std::string::npos) << e.path();
  }
  EXPECT_GT(files, 3u);

  // Restarted with the key, the server reads the task back (its output: from the end record).
  StartServer();
  json d = Cli({"task", "describe", token});
  EXPECT_EQ(d["state"], "SUCCEEDED") << d.dump();
  EXPECT_NE(d.dump().find(kSecret + "-output"), std::string::npos) << d.dump();
}

// Rotation through the binaries: a second key encrypts from the restart on; with the first
// key's line removed, a task it sealed answers InternalFailure naming key id 1, and the server
// stays up (a new task issues, describes and succeeds under key 2).
TEST_F(PayloadKeyTest, ARemovedKeyLeavesItsRecordsUnreadableWithAClearError) {
  Cli({"keygen", "--payload-key-file", key_file()});
  StartServer({"--payload-key-file", key_file()});
  const std::string old_token =
      Cli({"task", "issue", "--callback", "--input", "{\"a\":1}"})["taskToken"];
  EXPECT_EQ(server_->Terminate(), 0) << server_->Log();
  EXPECT_EQ(Cli({"keygen", "--payload-key-file", key_file()})["keyId"], 2);
  StartServer();  // both keys: the old task still reads
  EXPECT_EQ(Cli({"task", "describe", old_token})["state"], "STARTED");
  const std::string new_token =
      Cli({"task", "issue", "--callback", "--input", "{\"b\":2}"})["taskToken"];
  EXPECT_EQ(server_->Terminate(), 0) << server_->Log();

  std::string kept;  // the file without key 1's line, mode unchanged
  std::istringstream in(FileBytes(key_file()));
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("v1 1 ", 0) != 0) kept += line + "\n";
  }
  std::ofstream(key_file(), std::ios::trunc) << kept;
  StartServer();
  // InternalFailure reaches a Cap'n Proto client as a failed call (the CLI's exit 1).
  json old_d = Cli({"task", "describe", old_token}, 1);
  EXPECT_EQ(old_d["error"], "InternalFailure") << old_d.dump();
  const std::string message = old_d["message"];
  EXPECT_NE(message.find("payload key id 1"), std::string::npos) << message;
  EXPECT_EQ(Cli({"task", "describe", new_token})["state"], "STARTED");
  EXPECT_EQ(Cli({"task", "succeed", new_token, "--output", "{}"}), json::object());
  EXPECT_FALSE(Cli({"task", "issue", "--callback"})["taskToken"].get<std::string>().empty());
}

TEST_F(PayloadKeyTest, AKeyFileOthersCanReadAndAMissingKeyFileStopTheStart) {
  Cli({"keygen", "--payload-key-file", key_file()});
  ASSERT_EQ(::chmod(key_file().c_str(), 0644), 0);
  CliResult r = RunCli({"--data-dir", dir_.path() + "/data", "--rpc-listen", "127.0.0.1:0",
                        "--aws-listen", "off", "--payload-key-file", key_file()},
                       dir_.path() + "/out", kDaemonPath);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("mode 0644"), std::string::npos) << r.err;
  r = RunCli({"--data-dir", dir_.path() + "/data", "--rpc-listen", "127.0.0.1:0", "--aws-listen",
              "off", "--payload-key-file", dir_.path() + "/none.key"},
             dir_.path() + "/out", kDaemonPath);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("no payload key file"), std::string::npos) << r.err;
}

TEST_F(PayloadKeyTest, AnEncryptedDatabaseStartedWithoutKeysIsRefused) {
  Cli({"keygen", "--payload-key-file", key_file()});
  StartServer({"--payload-key-file", key_file()});
  EXPECT_EQ(server_->Terminate(), 0) << server_->Log();
  const CliResult r = RunCli(
      {"--data-dir", dir_.path() + "/data", "--rpc-listen", "127.0.0.1:0", "--aws-listen", "off"},
      dir_.path() + "/out", kDaemonPath);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("encrypted payloads"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace tw::rpc::testing
