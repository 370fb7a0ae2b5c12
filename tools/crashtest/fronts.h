// The crash test's two ways in: the Cap'n Proto API (rpc/client.h) and the AWS gateway (AWS JSON
// 1.0, AWSStepFunctions.* and TokenWheel.* targets). Both answer in one vocabulary, so that every
// scenario of the workload runs through either, and a race can put one call on each.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "engine/engine.h"
#include "tools/crashtest/model.h"

namespace tw::crashtest {

struct CallAnswer {
  Answer answer = Answer::kUnknown;
  std::optional<TaskState> recorded_state;  // kRefused: how the task ended, when said
  std::string token;                        // issue, poll
  std::string input;                        // poll
  bool existing = false;                    // issue
  std::string arn;                          // create activity
  std::string detail;                       // an error's code and message, for reports
};

class Front {
 public:
  virtual ~Front() = default;
  virtual const char* name() const = 0;
  virtual CallAnswer Issue(const IssueTaskRequest& req) = 0;
  virtual CallAnswer Poll(const std::string& activity_arn, const std::string& worker) = 0;
  virtual CallAnswer Heartbeat(const std::string& token) = 0;
  virtual CallAnswer Complete(CompletionKind kind, const std::string& token,
                              const std::string& payload) = 0;
  virtual CallAnswer CreateActivity(const std::string& name) = 0;
  virtual CallAnswer DeleteActivity(const std::string& arn) = 0;
};

class GatewayClient;

// The gateway's front can also start a completion without waiting for its answer
// (FinishStarted gets it), so that a call through the other front end races it: the request is
// on the wire before the other call is made.
class GatewayFront : public Front {
 public:
  virtual bool StartComplete(CompletionKind kind, const std::string& token,
                             const std::string& payload) = 0;
  virtual CallAnswer FinishStarted() = 0;
};

// nullptr if it cannot connect within timeout_ms. Both belong to the calling thread.
std::unique_ptr<Front> ConnectCapnp(const std::string& address, int64_t timeout_ms);
std::unique_ptr<GatewayFront> ConnectGateway(const std::string& address);

// "SUCCEEDED" -> kSucceeded, ...; nullopt for any other text.
std::optional<TaskState> StateNamed(const std::string& name);

// The input that names a task: {"key": KEY, "n": PAD} (PAD bytes of filler).
std::string TaskInput(const std::string& key, size_t pad);
// The key back from an input, or "".
std::string KeyOfInput(const std::string& input);

}  // namespace tw::crashtest
