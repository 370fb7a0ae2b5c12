// A blocking client of the AWS JSON 1.0 gateway for the crash test: one keep-alive connection,
// one call at a time, every wait bounded. Unsigned requests (the test server has no
// --aws-credentials). No answer at all (the server died, the connection dropped, the deadline
// passed) is nullopt: the call may or may not have happened.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

namespace tw::crashtest {

struct GatewayReply {
  int status = 0;
  nlohmann::json body;  // the parsed JSON body (an object), or null if it was not JSON
  // The error code without its namespace ("TaskTimedOut"), or "" for a 200.
  std::string error_code() const;
  bool ok() const { return status == 200; }
};

class GatewayClient {
 public:
  explicit GatewayClient(std::string address);  // HOST:PORT
  ~GatewayClient();
  GatewayClient(const GatewayClient&) = delete;
  GatewayClient& operator=(const GatewayClient&) = delete;

  // POST / with X-Amz-Target: `target` ("AWSStepFunctions.SendTaskSuccess",
  // "TokenWheel.IssueTask", ...). Connects first if needed.
  std::optional<GatewayReply> Call(const std::string& target, const nlohmann::json& body,
                                   int64_t timeout_ms);
  // Sends a call without reading its answer; Receive reads it. Two clients with one call each
  // in flight race two completions of one task.
  bool Send(const std::string& target, const nlohmann::json& body, int64_t timeout_ms);
  std::optional<GatewayReply> Receive(int64_t timeout_ms);
  void Close();

 private:
  bool Connect(int64_t deadline_ms);
  bool WriteAll(const std::string& bytes, int64_t deadline_ms);
  bool ReadMore(int64_t deadline_ms);

  std::string host_;
  uint16_t port_ = 0;
  int fd_ = -1;
  std::string in_;  // received, not yet parsed
};

}  // namespace tw::crashtest
