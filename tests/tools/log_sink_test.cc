// tokenwheeld's log sink (tools/log_sink.h): the text and JSON lines, the level filter, the
// rotating file, and refusals of bad options.
#include "tools/log_sink.h"

#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "tests/temp_dir.h"

namespace tw::tools {
namespace {

LogRecord Started() {
  return {LogLevel::kInfo,
          "tokenwheeld",
          "started",
          "started, listening on 127.0.0.1:7411",
          {{"rpc_listen", "127.0.0.1:7411"}, {"recovered_tasks", "3"}}};
}

std::vector<std::string> Lines(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> out;
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

TEST(LogSinkTest, TextLineIsLevelComponentAndMessage) {
  EXPECT_EQ(FormatText(Started()), "info tokenwheeld: started, listening on 127.0.0.1:7411");
}

TEST(LogSinkTest, JsonLinesCarryEventAndFieldsInOrderAndSurviveQuotesAndBadUtf8) {
  LogRecord r = Started();
  r.message = "a \"quoted\"\nline \xff";
  const nlohmann::ordered_json j = nlohmann::ordered_json::parse("{" + FormatJsonFields(r) + "}");
  std::vector<std::string> keys;
  for (const auto& [k, v] : j.items()) keys.push_back(k);
  EXPECT_EQ(keys, (std::vector<std::string>{"level", "component", "event", "msg", "rpc_listen",
                                            "recovered_tasks"}));
  EXPECT_EQ(j["event"], "started");
  EXPECT_EQ(j["recovered_tasks"], "3");
  EXPECT_EQ(j["msg"], "a \"quoted\"\nline \xEF\xBF\xBD");  // the bad byte became U+FFFD
}

TEST(LogSinkTest, AFileGetsOneJsonObjectPerRecordFromTheChosenLevelUp) {
  TempDir dir("tw-log-sink");
  const std::string path = dir.path() + "/tokenwheeld.log";
  std::string error;
  LogSink sink = MakeLogSink({"json", "warn", path}, &error);
  ASSERT_TRUE(sink) << error;
  sink(Started());  // info: below warn, dropped
  sink({LogLevel::kWarn, "rpc", "overloaded", "calls refused", {{"suppressed", "41"}}});
  sink({LogLevel::kError, "engine", "storage_failure", "No space left on device", {}});
  const std::vector<std::string> lines = Lines(path);  // flushed after every record
  ASSERT_EQ(lines.size(), 2u);
  const auto first = nlohmann::json::parse(lines[0]);
  EXPECT_EQ(first["level"], "warn");
  EXPECT_EQ(first["event"], "overloaded");
  EXPECT_EQ(first["suppressed"], "41");
  const std::string ts = first["ts"];
  EXPECT_EQ(ts.size(), 24u) << ts;  // 2026-12-07T19:35:23.911Z
  EXPECT_EQ(ts.back(), 'Z');
  EXPECT_EQ(nlohmann::json::parse(lines[1])["level"], "error");
}

TEST(LogSinkTest, TextFileLinesStartWithAUtcTimestamp) {
  TempDir dir("tw-log-sink");
  const std::string path = dir.path() + "/text.log";
  std::string error;
  LogSink sink = MakeLogSink({"text", "debug", path}, &error);
  ASSERT_TRUE(sink) << error;
  sink(Started());
  const std::vector<std::string> lines = Lines(path);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0].substr(24), " info tokenwheeld: started, listening on 127.0.0.1:7411");
  EXPECT_EQ(lines[0][23], 'Z');
}

TEST(LogSinkTest, BadOptionsAreRefusedWithTheFlagNamed) {
  std::string error;
  EXPECT_FALSE(MakeLogSink({"xml", "info", ""}, &error));
  EXPECT_NE(error.find("--log-format"), std::string::npos) << error;
  EXPECT_FALSE(MakeLogSink({"text", "verbose", ""}, &error));
  EXPECT_NE(error.find("--log-level"), std::string::npos) << error;
  // A directory cannot be made under a regular file.
  TempDir dir("tw-log-sink");
  std::ofstream(dir.path() + "/file") << "x";
  EXPECT_FALSE(MakeLogSink({"text", "info", dir.path() + "/file/tokenwheeld.log"}, &error));
  EXPECT_NE(error.find("--log-file"), std::string::npos) << error;
}

}  // namespace
}  // namespace tw::tools
