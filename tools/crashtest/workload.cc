#include "tools/crashtest/workload.h"

#include <chrono>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>

#include "rpc/client.h"
#include "tools/crashtest/fronts.h"
#include "tools/crashtest/gateway_client.h"
#include "tools/crashtest/server_process.h"

namespace tw::crashtest {

namespace {

constexpr int64_t kConnectTimeoutMs = 5000;
constexpr const char* kConsumer = "crashtest";
constexpr const char* kGatewayConsumer = "crashtest-gateway";
constexpr int64_t kGatewayReadMs = 10'000;

void SleepMs(int64_t ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }

}  // namespace

// One worker thread's connections, random source and scenarios.
class Workload::Worker {
 public:
  Worker(Workload* w, int index, uint64_t seed) : w_(w), index_(index), rng_(seed) {}

  bool Connect(const std::string& rpc, const std::string& aws) {
    capnp_ = ConnectCapnp(rpc, kConnectTimeoutMs);
    gateway_ = ConnectGateway(aws);
    racer_ = ConnectGateway(aws);
    return capnp_ != nullptr;
  }

  // One scenario. False if a call went unanswered (reconnect before the next).
  bool RunScenario() {
    broken_ = false;
    const uint32_t dice = Below(100);
    if (dice < 30) {
      Callback();
    } else if (dice < 45) {
      RacingCompletions();
    } else if (dice < 58) {
      CompletionRacingTimeout();
    } else if (dice < 85) {
      ActivityTask();
    } else if (dice < 90) {
      ActivityDeletion();
    } else {
      Abandoned();
    }
    return !broken_;
  }

 private:
  uint32_t Below(uint32_t n) { return static_cast<uint32_t>(rng_() % n); }
  template <typename T>
  T Pick(std::initializer_list<T> options) {
    return *(options.begin() + Below(static_cast<uint32_t>(options.size())));
  }
  Front& Primary() { return Below(2) == 0 ? *capnp_ : static_cast<Front&>(*gateway_); }
  std::string NewKey() {
    return "k" + std::to_string(w_->options_.seed) + "-" + std::to_string(index_) + "-" +
           std::to_string(++serial_);
  }
  CompletionKind RandomKind() {
    const uint32_t d = Below(10);
    return d < 5 ? CompletionKind::kSuccess
                 : (d < 8 ? CompletionKind::kFailure : CompletionKind::kCancel);
  }
  std::string Payload(CompletionKind kind) {
    const std::string n = std::to_string(index_) + "-" + std::to_string(++serial_);
    return kind == CompletionKind::kSuccess ? "{\"by\":\"" + n + "\"}"
                                            : (kind == CompletionKind::kFailure ? "E" + n : "");
  }
  void Count(const CallAnswer& a) {
    ++w_->calls_;
    if (a.answer == Answer::kUnknown) {
      ++w_->unanswered_;
      broken_ = true;
    }
  }

  // ---- calls, recorded in the model ----

  // The task and its token (a copy: another worker's poll may write the model's meanwhile).
  struct Issued {
    TaskModel* task = nullptr;
    std::string token;
    explicit operator bool() const { return task != nullptr; }
  };

  Issued Issue(Front& f, const std::string& arn, uint32_t timeout_s, uint32_t heartbeat_s,
               uint32_t schedule_to_start_s) {
    TaskModel m;
    m.key = NewKey();
    m.activity_arn = arn;
    m.timeout_s = timeout_s;
    m.heartbeat_s = heartbeat_s;
    m.schedule_to_start_s = arn.empty() ? 0 : schedule_to_start_s;
    m.issue_earliest_ms = WallMs();
    TaskModel* t = w_->model_->NewTask(m);
    IssueTaskRequest req;
    req.activity_arn = arn;
    req.input = TaskInput(m.key, w_->options_.input_pad);
    req.timeout_s = timeout_s;
    req.heartbeat_s = heartbeat_s;
    req.schedule_to_start_s = m.schedule_to_start_s;
    req.idempotency_key = m.key;
    const CallAnswer a = f.Issue(req);
    Count(a);
    const int64_t now = WallMs();
    w_->model_->Update(t, [&](TaskModel& x) {
      x.issue = a.answer;
      x.issue_latest_ms = now;
      if (a.answer == Answer::kApplied) x.token = a.token;
      if (a.answer == Answer::kRejected || a.answer == Answer::kRefused) x.abandoned = true;
    });
    if (a.answer != Answer::kApplied) return {};
    ++w_->applied_;
    return {t, a.token};
  }

  // Records a completion about to be sent; its index in the task's list.
  size_t BeginCompletion(TaskModel* t, CompletionKind kind, const std::string& payload) {
    size_t index = 0;
    w_->model_->Update(t, [&](TaskModel& x) {
      x.completions.push_back(
          Completion{kind, payload, Answer::kPending, std::nullopt, w_->model_->cycle()});
      index = x.completions.size() - 1;
    });
    return index;
  }
  void EndCompletion(TaskModel* t, size_t index, const CallAnswer& a) {
    Count(a);
    if (a.answer == Answer::kApplied) ++w_->applied_;
    w_->model_->Update(t, [&](TaskModel& x) {
      x.completions[index].answer = a.answer;
      x.completions[index].recorded_state = a.recorded_state;
    });
  }
  void Complete(Front& f, const Issued& t, CompletionKind kind, const std::string& payload) {
    const size_t i = BeginCompletion(t.task, kind, payload);
    EndCompletion(t.task, i, f.Complete(kind, t.token, payload));
  }
  void Heartbeat(Front& f, const Issued& issued) {
    TaskModel* t = issued.task;
    const int64_t sent = WallMs();
    const CallAnswer a = f.Heartbeat(issued.token);
    Count(a);
    const int64_t now = WallMs();
    w_->model_->Update(t, [&](TaskModel& x) {
      if (a.answer == Answer::kApplied) x.heartbeat_acked_sent_ms = sent;
      if (a.answer == Answer::kApplied || a.answer == Answer::kUnknown) {
        x.heartbeat_latest_ms = std::max(x.heartbeat_latest_ms, now);
      }
    });
  }
  // A poll of `arn`; the task it was handed (any task of the activity), or none.
  Issued Poll(Front& f, const std::string& arn) {
    const int64_t sent = WallMs();
    const CallAnswer a = f.Poll(arn, "w" + std::to_string(index_));
    Count(a);
    if (a.answer != Answer::kApplied || a.token.empty()) return {};
    const int64_t now = WallMs();
    TaskModel* t = w_->model_->FindByToken(a.token);
    if (t == nullptr) t = w_->model_->FindByKey(KeyOfInput(a.input));
    if (t == nullptr) {
      std::cerr << "crashtest: a poll was handed a task the workload never issued: " << a.input
                << "\n";
      return {};
    }
    bool twice = false;
    w_->model_->Update(t, [&](TaskModel& x) {
      twice = x.handed_out;
      x.handed_out = true;
      if (x.token.empty()) x.token = a.token;  // its issue went unanswered
      x.start_earliest_ms = sent;
      x.start_latest_ms = now;
    });
    if (twice) w_->model_->CountDoubleHandOut(*t);
    return {t, a.token};
  }

  // ---- scenarios ----

  void Callback() {
    Front& f = Primary();
    const uint32_t timeout = Pick<uint32_t>({0, 0, 3, 5});
    const Issued t = Issue(f, "", timeout, Pick<uint32_t>({0, 0, 1, 2}), 0);
    if (!t) return;
    for (uint32_t i = Below(3); i > 0 && !broken_; --i) Heartbeat(Primary(), t);
    if (broken_) return;
    const CompletionKind kind = RandomKind();
    const std::string payload = Payload(kind);
    Front& g = Primary();
    Complete(g, t, kind, payload);
    if (!broken_ && Below(5) == 0) Complete(g, t, kind, payload);  // a retry of the same call
  }

  // Two different completions of one task at once, one on each front end (or both on the
  // gateway): exactly one may win.
  void RacingCompletions() {
    const Issued t = Issue(Primary(), "", Pick<uint32_t>({0, 3}), 0, 0);
    if (!t) return;
    const CompletionKind k1 = RandomKind();
    const CompletionKind k2 = RandomKind();
    const std::string p1 = Payload(k1);
    const std::string p2 = Payload(k2);
    const size_t i1 = BeginCompletion(t.task, k1, p1);
    const size_t i2 = BeginCompletion(t.task, k2, p2);
    const bool sent = racer_->StartComplete(k1, t.token, p1);
    EndCompletion(t.task, i2, Primary().Complete(k2, t.token, p2));
    EndCompletion(t.task, i1, sent ? racer_->FinishStarted() : CallAnswer{});
  }

  // A success sent around the moment the task's clock runs out: it wins or it is refused.
  void CompletionRacingTimeout() {
    const bool heartbeat = Below(2) == 0;
    const Issued t = Issue(Primary(), "", heartbeat ? 3 : 1, heartbeat ? 1 : 0, 0);
    if (!t) return;
    SleepMs(900 + Below(200));
    Complete(Primary(), t, CompletionKind::kSuccess, Payload(CompletionKind::kSuccess));
  }

  void ActivityTask() {
    const auto& activities = w_->options_.activities;
    const std::string& arn = activities[Below(static_cast<uint32_t>(activities.size()))];
    const uint32_t timeout = Pick<uint32_t>({0, 4});
    Issue(Primary(), arn, timeout, Pick<uint32_t>({0, 2}), Pick<uint32_t>({0, 0, 3}));
    if (broken_) return;
    const Issued t = Poll(Primary(), arn);
    if (!t || broken_) return;
    if (Below(2) == 0) Heartbeat(Primary(), t);
    if (broken_ || Below(5) == 0) return;  // the worker walked away: its clocks end it
    const CompletionKind kind = Below(3) == 0 ? CompletionKind::kFailure : CompletionKind::kSuccess;
    Complete(Primary(), t, kind, Payload(kind));
  }

  // A short-lived activity, deleted while it still has queued (and maybe started) tasks.
  void ActivityDeletion() {
    Front& f = Primary();
    const CallAnswer created = f.CreateActivity("ct-" + NewKey());
    Count(created);
    if (created.answer != Answer::kApplied) return;
    for (uint32_t i = 1 + Below(2); i > 0 && !broken_; --i) Issue(Primary(), created.arn, 0, 0, 0);
    if (!broken_ && Below(2) == 0) Poll(Primary(), created.arn);
    if (broken_) return;
    for (TaskModel* t : w_->model_->TasksOf(created.arn)) {
      w_->model_->Update(t, [](TaskModel& x) { x.activity_delete_sent = true; });
    }
    Count(Primary().DeleteActivity(created.arn));
  }

  // Nobody will ever complete it: its heartbeat clock must end it, after any restart.
  void Abandoned() { Issue(Primary(), "", 2, 1, 0); }

  Workload* w_;
  int index_;
  std::mt19937_64 rng_;
  uint64_t serial_ = 0;
  bool broken_ = false;
  std::unique_ptr<Front> capnp_;
  std::unique_ptr<GatewayFront> gateway_;
  std::unique_ptr<GatewayFront> racer_;
};

Workload::Workload(Model* model, WorkloadOptions options)
    : model_(model), options_(std::move(options)) {
  for (int i = 0; i < options_.workers; ++i) threads_.emplace_back([this, i] { WorkerMain(i); });
  threads_.emplace_back([this] { ConsumerMain(); });
  threads_.emplace_back([this] { GatewayConsumerMain(); });
}

Workload::~Workload() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    shutdown_ = true;
  }
  cv_.notify_all();
  for (auto& t : threads_) t.join();
}

void Workload::Follow(const std::string& rpc_address, const std::string& aws_address) {
  std::lock_guard<std::mutex> lock(mu_);
  rpc_address_ = rpc_address;
  aws_address_ = aws_address;
  ++generation_;
  cv_.notify_all();
}

void Workload::Run() {
  std::lock_guard<std::mutex> lock(mu_);
  running_ = true;
  cv_.notify_all();
}

void Workload::Drain() {
  std::lock_guard<std::mutex> lock(mu_);
  running_ = false;
}

bool Workload::Park(int64_t timeout_ms) {
  std::unique_lock<std::mutex> lock(mu_);
  return cv_.wait_for(lock, std::chrono::milliseconds(timeout_ms),
                      [&] { return !running_ && busy_ == 0; });
}

bool Workload::WaitConsumerSubscribed(int64_t timeout_ms) {
  std::unique_lock<std::mutex> lock(mu_);
  return cv_.wait_for(lock, std::chrono::milliseconds(timeout_ms),
                      [&] { return consumer_subscribed_ && gateway_consumer_subscribed_; });
}

bool Workload::WaitRunning(uint64_t* generation, std::string* rpc, std::string* aws) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return shutdown_ || running_; });
  if (shutdown_) return false;
  ++busy_;
  *generation = generation_;
  *rpc = rpc_address_;
  *aws = aws_address_;
  return true;
}

void Workload::WorkerMain(int index) {
  Worker worker(this, index, options_.seed * 1000003 + static_cast<uint64_t>(index));
  uint64_t connected_generation = 0;
  uint64_t generation = 0;
  std::string rpc;
  std::string aws;
  while (WaitRunning(&generation, &rpc, &aws)) {
    bool ok = true;
    if (generation != connected_generation) {
      ok = worker.Connect(rpc, aws);
      connected_generation = ok ? generation : 0;
    }
    if (ok && !worker.RunScenario()) {
      connected_generation = 0;  // reconnect before the next, after a pause
      ok = false;
    }
    if (!ok) SleepMs(20);
    std::lock_guard<std::mutex> lock(mu_);
    --busy_;
    cv_.notify_all();
  }
}

// Follows the server across restarts: subscribes from the durable cursor, records every event,
// acknowledges about every other batch.
void Workload::ConsumerMain() {
  std::mt19937_64 rng(options_.seed ^ 0x5eed);
  uint64_t subscription = 0;
  while (true) {
    std::string rpc;
    uint64_t generation = 0;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return shutdown_ || !rpc_address_.empty(); });
      if (shutdown_) return;
      rpc = rpc_address_;
      generation = generation_;
    }
    auto client = rpc::Client::Connect(rpc, kConnectTimeoutMs);
    auto sub = client.ok() ? client.value->Subscribe(kConsumer, 0)
                           : Result<std::unique_ptr<rpc::Subscription>>::Fail(client.error);
    if (!sub.ok()) {
      SleepMs(20);
      continue;
    }
    ++subscription;
    {
      std::lock_guard<std::mutex> lock(mu_);
      consumer_subscribed_ = true;
      cv_.notify_all();
    }
    while (true) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (shutdown_ || generation != generation_) break;
      }
      auto events = sub.value->Next(100);
      if (!events.ok()) break;
      for (const OutcomeEvent& e : events.value) model_->RecordEvent(e, 0, subscription);
      if (!events.value.empty() && rng() % 2 == 0) {
        (void)client.value->AckEvents(kConsumer, events.value.back().seq);
      }
    }
    sub.value.reset();  // before its client
  }
}

}  // namespace tw::crashtest

namespace tw::crashtest {

namespace {

// One event of a GetOutcomes answer, in the engine's vocabulary; nullopt if malformed.
std::optional<OutcomeEvent> EventFromJson(const nlohmann::json& j) {
  if (!j.is_object() || !j.contains("sequence") || !j["sequence"].is_number_unsigned()) {
    return std::nullopt;
  }
  auto text = [&](const char* name, std::string* out) {
    auto it = j.find(name);
    if (it == j.end() || !it->is_string()) return false;
    *out = it->get<std::string>();
    return true;
  };
  OutcomeEvent e;
  e.seq = j["sequence"].get<uint64_t>();
  std::string state;
  if (!text("taskToken", &e.token) || !text("state", &state)) return std::nullopt;
  const std::optional<TaskState> s = StateNamed(state);
  if (!s) return std::nullopt;
  e.state = *s;
  text("output", &e.output);
  e.has_error = text("error", &e.error);
  e.has_cause = text("cause", &e.cause);
  return e;
}

}  // namespace

// The same stream as ConsumerMain, read through the gateway's long polls (GetOutcomes from the
// durable cursor after each reconnect, then from the sequence after the last one read), and
// acknowledged there (AckOutcomes).
void Workload::GatewayConsumerMain() {
  std::mt19937_64 rng(options_.seed ^ 0x9a7e);
  uint64_t subscription = 0;
  while (true) {
    std::string aws;
    uint64_t generation = 0;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return shutdown_ || !aws_address_.empty(); });
      if (shutdown_) return;
      aws = aws_address_;
      generation = generation_;
    }
    GatewayClient c(aws);
    ++subscription;
    std::optional<uint64_t> next;
    while (true) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (shutdown_ || generation != generation_) break;
      }
      nlohmann::json body = {
          {"consumer", kGatewayConsumer}, {"maxEvents", 100}, {"waitSeconds", 1}};
      if (next) body["fromSequence"] = *next;
      const auto r = c.Call("TokenWheel.GetOutcomes", body, kGatewayReadMs);
      if (!r || !r->ok() || !r->body.is_object()) break;
      {
        std::lock_guard<std::mutex> lock(mu_);
        gateway_consumer_subscribed_ = true;
        cv_.notify_all();
      }
      uint64_t last = 0;
      const auto events = r->body.find("events");
      if (events != r->body.end() && events->is_array()) {
        for (const auto& j : *events) {
          const std::optional<OutcomeEvent> e = EventFromJson(j);
          if (!e) continue;
          model_->RecordEvent(*e, 1, subscription);
          last = e->seq;
        }
      }
      const auto n = r->body.find("nextSequence");
      if (n != r->body.end() && n->is_number_unsigned()) next = n->get<uint64_t>();
      if (last != 0 && rng() % 2 == 0) {
        (void)c.Call("TokenWheel.AckOutcomes", {{"consumer", kGatewayConsumer}, {"sequence", last}},
                     kGatewayReadMs);
      }
    }
    SleepMs(20);
  }
}

}  // namespace tw::crashtest
