// An Engine that answers every call with a plain success from its own job thread (the "engine
// thread"): the base of the tests' scripted fake engines (tests/rpc/bridge_test.cc,
// server_bounds_test.cc), which override only the calls they script. Header-only.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/engine.h"
#include "tests/rpc/job_thread.h"

namespace tw::rpc::testing {

class AnsweringEngine : public Engine {
 public:
  void Stop() override {}

  void CreateActivity(CreateActivityRequest req, Callback<ActivityInfo> done) override {
    AnswerOk(done, ActivityInfo{"arn:" + req.name, req.name, 1});
  }
  void DeleteActivity(DeleteActivityRequest, Callback<Empty> done) override { AnswerOk(done); }
  void DescribeActivity(DescribeActivityRequest req, Callback<ActivityInfo> done) override {
    AnswerOk(done, ActivityInfo{req.arn, "x", 1});
  }
  void ListActivities(ListActivitiesRequest, Callback<ListActivitiesReply> done) override {
    AnswerOk(done);
  }
  void IssueTask(IssueTaskRequest, Callback<IssueTaskReply> done) override {
    AnswerOk(done, IssueTaskReply{"t", false});
  }
  void GetActivityTask(GetActivityTaskRequest, uint64_t,
                       Callback<GetActivityTaskReply> done) override {
    AnswerOk(done);
  }
  void WithdrawPoll(uint64_t) override {}
  void ReturnTask(std::string) override {}
  void SendTaskSuccess(SendTaskSuccessRequest, Callback<CompletionReply> done) override {
    AnswerOk(done);
  }
  void SendTaskFailure(SendTaskFailureRequest, Callback<CompletionReply> done) override {
    AnswerOk(done);
  }
  void SendTaskHeartbeat(SendTaskHeartbeatRequest, Callback<Empty> done) override {
    AnswerOk(done);
  }
  void CancelTask(CancelTaskRequest, Callback<CompletionReply> done) override { AnswerOk(done); }
  void DescribeTask(DescribeTaskRequest, Callback<TaskDescription> done) override {
    AnswerOk(done);
  }
  void RegisterConsumer(std::string name, Callback<ConsumerInfo> done) override {
    AnswerOk(done, ConsumerInfo{name, 0});
  }
  void DeleteConsumer(std::string, Callback<Empty> done) override { AnswerOk(done); }
  void AckEvents(std::string, uint64_t, Callback<Empty> done) override { AnswerOk(done); }
  Result<std::vector<OutcomeEvent>> ReadEvents(uint64_t, size_t) override {
    return Result<std::vector<OutcomeEvent>>::Ok({});
  }
  uint64_t LastEventSeq() const override { return 0; }
  void AddEventListener(std::function<void(uint64_t)>) override {}
  void GetStats(Callback<EngineStats> done) override { AnswerOk(done); }
  void Sync(Callback<Empty> done) override { AnswerOk(done); }
  uint64_t RecoveredTasks() const override { return 0; }
  int64_t RecoveryMs() const override { return 0; }
  StorageHealth Health() const override { return {}; }

 protected:
  // Runs `job` on the engine thread, after every job posted before it.
  void Post(std::function<void()> job) { thread_->Post(std::move(job)); }
  template <typename T>
  void AnswerOk(const Callback<T>& done, T value = {}) {
    Post([done, value = std::move(value)]() { done(Result<T>::Ok(value)); });
  }
  // A subclass calls this first in its destructor: the engine thread finishes its jobs while the
  // subclass's state, which they use, is still alive.
  void JoinThread() { thread_.reset(); }

 private:
  std::unique_ptr<JobThread> thread_ = std::make_unique<JobThread>();
};

}  // namespace tw::rpc::testing
