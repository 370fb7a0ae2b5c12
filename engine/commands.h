// The commands the engine thread applies: requests already validated on the caller's thread,
// each with the callback its answer goes to (a few carry none: a withdrawn poll, a returned
// task). The runtime queues them (engine_impl.cc); EngineCore::Apply applies them.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <variant>

#include "engine/engine.h"
#include "engine/types.h"

namespace tw {

struct CreateActivityCmd {
  CreateActivityRequest req;
  Callback<ActivityInfo> done;
};
struct DeleteActivityCmd {
  DeleteActivityRequest req;
  Callback<Empty> done;
};
struct DescribeActivityCmd {
  DescribeActivityRequest req;
  Callback<ActivityInfo> done;
};
struct ListActivitiesCmd {
  ListActivitiesRequest req;
  Callback<ListActivitiesReply> done;
};
struct IssueCmd {
  IssueTaskRequest req;
  Callback<IssueTaskReply> done;
};
struct PollCmd {
  GetActivityTaskRequest req;
  uint64_t poll_id = 0;
  Callback<GetActivityTaskReply> done;
};
struct WithdrawCmd {
  uint64_t poll_id = 0;
};
struct ReturnCmd {
  TaskId id;
};
struct SuccessCmd {
  TaskId id;
  std::string output;
  Callback<CompletionReply> done;
};
struct FailureCmd {
  TaskId id;
  std::optional<std::string> error;
  std::optional<std::string> cause;
  Callback<CompletionReply> done;
};
struct HeartbeatCmd {
  TaskId id;
  Callback<Empty> done;
};
struct CancelCmd {
  TaskId id;
  Callback<CompletionReply> done;
};
struct DescribeCmd {
  TaskId id;
  Callback<TaskDescription> done;
};
struct RegisterConsumerCmd {
  std::string name;
  Callback<ConsumerInfo> done;
};
struct DeleteConsumerCmd {
  std::string name;
  Callback<Empty> done;
};
struct AckCmd {
  std::string name;
  uint64_t seq = 0;
  Callback<Empty> done;
};
struct StatsCmd {
  Callback<EngineStats> done;
};
struct SyncCmd {
  Callback<Empty> done;
};

using Command = std::variant<CreateActivityCmd, DeleteActivityCmd, DescribeActivityCmd,
                             ListActivitiesCmd, IssueCmd, PollCmd, WithdrawCmd, ReturnCmd,
                             SuccessCmd, FailureCmd, HeartbeatCmd, CancelCmd, DescribeCmd,
                             RegisterConsumerCmd, DeleteConsumerCmd, AckCmd, StatsCmd, SyncCmd>;

}  // namespace tw
