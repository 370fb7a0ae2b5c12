#include "tools/crashtest/model.h"

#include <algorithm>
#include <chrono>
#include <iostream>
#include <limits>
#include <thread>

#include "tools/crashtest/server_process.h"

namespace tw::crashtest {

namespace {

constexpr int64_t kNever = std::numeric_limits<int64_t>::max();
// Problems printed in full; past this, only counted.
constexpr int kReportsMax = 50;
int reports_printed = 0;

TaskState StateOf(CompletionKind k) {
  switch (k) {
    case CompletionKind::kSuccess:
      return TaskState::kSucceeded;
    case CompletionKind::kFailure:
      return TaskState::kFailed;
    case CompletionKind::kCancel:
      return TaskState::kCancelled;
  }
  return TaskState::kScheduled;
}

// The payload a completion of this kind leaves in an outcome.
const std::string& PayloadOf(CompletionKind k, const Outcome& o) {
  static const std::string kNone;
  if (k == CompletionKind::kSuccess) return o.output;
  if (k == CompletionKind::kFailure) return o.error;
  return kNone;
}

bool Matches(const Completion& c, const Outcome& o) {
  return StateOf(c.kind) == o.state && PayloadOf(c.kind, o) == c.payload;
}

// The call may be the one that made this outcome: it had no answer, or it was an identical retry.
bool MayHaveMade(const Completion& c, const Outcome& o) {
  return (c.answer == Answer::kUnknown || c.answer == Answer::kDuplicate) && Matches(c, o);
}

int64_t Plus(int64_t base, uint32_t seconds) {
  return seconds == 0 ? kNever : base + int64_t{seconds} * 1000;
}

}  // namespace

const char* CompletionKindName(CompletionKind k) {
  switch (k) {
    case CompletionKind::kSuccess:
      return "success";
    case CompletionKind::kFailure:
      return "failure";
    case CompletionKind::kCancel:
      return "cancel";
  }
  return "?";
}

uint64_t Counters::Total() const {
  return acked_lost + double_transitions + wrong_outcome + timers_lost + timers_early +
         events_missing + events_duplicated_with_new_seq + events_out_of_order;
}

void Counters::Add(const Counters& o) {
  acked_lost += o.acked_lost;
  double_transitions += o.double_transitions;
  wrong_outcome += o.wrong_outcome;
  timers_lost += o.timers_lost;
  timers_early += o.timers_early;
  events_missing += o.events_missing;
  events_duplicated_with_new_seq += o.events_duplicated_with_new_seq;
  events_out_of_order += o.events_out_of_order;
}

nlohmann::json Counters::ToJson() const {
  return {{"acked_lost", acked_lost},
          {"double_transitions", double_transitions},
          {"wrong_outcome", wrong_outcome},
          {"timers_lost", timers_lost},
          {"timers_early", timers_early},
          {"events_missing", events_missing},
          {"events_duplicated_with_new_seq", events_duplicated_with_new_seq},
          {"events_out_of_order", events_out_of_order}};
}

TaskModel* Model::NewTask(TaskModel t) {
  std::lock_guard<std::mutex> lock(mu_);
  tasks_.push_back(std::make_unique<TaskModel>(std::move(t)));
  TaskModel* p = tasks_.back().get();
  by_key_[p->key] = p;
  return p;
}

TaskModel* Model::FindByToken(const std::string& token) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = by_token_.find(token);
  return it == by_token_.end() ? nullptr : it->second;
}

TaskModel* Model::FindByKey(const std::string& key) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = by_key_.find(key);
  return it == by_key_.end() ? nullptr : it->second;
}

std::vector<TaskModel*> Model::TasksOf(const std::string& activity_arn) {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<TaskModel*> out;
  for (const auto& t : tasks_) {
    if (t->activity_arn == activity_arn) out.push_back(t.get());
  }
  return out;
}

void Model::RecordKill(int cycle, int64_t wall_ms) {
  std::lock_guard<std::mutex> lock(mu_);
  kill_ms_[cycle] = wall_ms;
}

void Model::RecordReady(int64_t spawn_wall_ms, int64_t ready_wall_ms) {
  std::lock_guard<std::mutex> lock(mu_);
  restarts_.emplace_back(spawn_wall_ms, ready_wall_ms);
}

int64_t Model::KillMs(int cycle) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = kill_ms_.find(cycle);
  return it == kill_ms_.end() ? WallMs() : it->second;
}

uint64_t Model::tasks() const {
  std::lock_guard<std::mutex> lock(mu_);
  return tasks_.size();
}

uint64_t Model::events() const {
  std::lock_guard<std::mutex> lock(mu_);
  return events_;
}

void Model::RecordEvent(const OutcomeEvent& e, int consumer, uint64_t subscription) {
  std::lock_guard<std::mutex> lock(mu_);
  ++events_;
  // Within one session the stream is gapless and in order; a new session (after a reconnect)
  // starts again after the durable cursor, so it may repeat sequences.
  uint64_t& last = last_seq_[consumer];
  if (subscription == last_subscription_[consumer]) {
    if (e.seq <= last) {
      ++event_counters_.events_out_of_order;
      std::cerr << "crashtest: seed " << seed_ << " cycle " << cycle_ << ": consumer " << consumer
                << " got event " << e.seq << " after " << last << " in one session\n";
    } else if (e.seq > last + 1) {
      event_counters_.events_missing += e.seq - last - 1;
      std::cerr << "crashtest: seed " << seed_ << " cycle " << cycle_ << ": consumer " << consumer
                << " skipped events " << last + 1 << ".." << e.seq - 1 << "\n";
    }
  }
  last = subscription == last_subscription_[consumer] ? std::max(last, e.seq) : e.seq;
  last_subscription_[consumer] = subscription;
  auto [it, inserted] = events_by_token_.try_emplace(e.token, SeenEvent{e.seq, e.outcome()});
  if (!inserted && it->second.seq != e.seq) {
    ++event_counters_.events_duplicated_with_new_seq;
    std::cerr << "crashtest: seed " << seed_ << " cycle " << cycle_ << ": task " << e.token
              << " has events " << it->second.seq << " and " << e.seq << "\n";
  }
}

void Model::CountDoubleHandOut(TaskModel& t) {
  std::lock_guard<std::mutex> lock(mu_);
  ++event_counters_.double_transitions;
  Report(t, "double_transitions", "handed out to two polls");
}

Counters Model::TakeEventCounters() {
  std::lock_guard<std::mutex> lock(mu_);
  Counters c = event_counters_;
  event_counters_ = Counters{};
  return c;
}

std::vector<TaskModel*> Model::UnresolvedIssues() {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<TaskModel*> out;
  for (const auto& t : tasks_) {
    if (t->token.empty() && !t->abandoned) out.push_back(t.get());
  }
  return out;
}

void Model::Report(TaskModel& t, const char* what, const std::string& detail) {
  if (t.reported || reports_printed >= kReportsMax) return;
  t.reported = true;
  ++reports_printed;
  std::cerr << "crashtest: seed " << seed_ << " cycle " << cycle_ << ": " << what << ": task "
            << t.key << " token " << t.token
            << (t.activity_arn.empty() ? " (callback)" : " (activity)") << ": " << detail << "\n";
}

int64_t Model::LatestDeadlineMs(const TaskModel& t, TaskState state) const {
  if (state == TaskState::kScheduled) return Plus(t.issue_latest_ms, t.schedule_to_start_s);
  const int64_t started = t.activity_arn.empty() ? t.issue_latest_ms : t.start_latest_ms;
  const int64_t back = restarts_.empty() ? 0 : restarts_.back().second;
  const int64_t heartbeat = std::max({started, t.heartbeat_latest_ms, back});
  return std::min(Plus(started, t.timeout_s), Plus(heartbeat, t.heartbeat_s));
}

int64_t Model::EarliestDeadlineMs(const TaskModel& t, TimeoutKind kind, int64_t ended_ms) const {
  const int64_t started = t.activity_arn.empty() ? t.issue_earliest_ms : t.start_earliest_ms;
  switch (kind) {
    case TimeoutKind::kScheduleToStart:
      return Plus(t.issue_earliest_ms, t.schedule_to_start_s);
    case TimeoutKind::kOverall:
      return Plus(started, t.timeout_s);
    case TimeoutKind::kHeartbeat: {
      // Heartbeat deadlines are not durable: a restart (or a reopen of the store) while the
      // task was live gives it a full period from the moment the server was back, which is
      // after `spawned`. The task was surely live then if it ended after `ready`.
      int64_t base = std::max(started, t.heartbeat_acked_sent_ms);
      for (const auto& [spawned, ready] : restarts_) {
        if (spawned > t.issue_earliest_ms && ready < ended_ms) base = std::max(base, spawned);
      }
      return Plus(base, t.heartbeat_s);
    }
    case TimeoutKind::kNone:
      break;
  }
  return kNever;
}

bool Model::ShouldDescribe(const TaskModel& t, size_t index) const {
  if (t.token.empty() || t.abandoned) return false;
  if (!t.final_seen || t.final_cycle + 1 >= cycle_) return true;
  // Older terminal tasks: a rotating sample, so that every one is read again now and then.
  return index % 16 == static_cast<size_t>(cycle_) % 16;
}

Counters Model::Check(const Describe& describe, bool final_check) {
  std::vector<std::pair<TaskModel*, std::string>> todo;  // with a copy of the token
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (size_t i = 0; i < tasks_.size(); ++i) {
      if (final_check ? !tasks_[i]->token.empty() && !tasks_[i]->abandoned
                      : ShouldDescribe(*tasks_[i], i)) {
        todo.emplace_back(tasks_[i].get(), tasks_[i]->token);
      }
    }
  }
  Counters c;
  for (auto& [t, token] : todo) {
    const int64_t now = WallMs();
    const Result<TaskDescription> d = describe(token);
    std::lock_guard<std::mutex> lock(mu_);
    CheckTask(*t, d, now, &c);
  }
  return c;
}

void Model::CheckTask(TaskModel& t, const Result<TaskDescription>& d, int64_t now_ms, Counters* c) {
  if (!d.ok()) {
    // Only "no such task" says it is gone; no answer, or a refusal to answer (overload, a
    // storage failure), says nothing.
    if (d.error.code != ErrorCode::kTaskDoesNotExist && d.error.code != ErrorCode::kInvalidToken) {
      return;
    }
    ++c->acked_lost;
    Report(
        t, "acked_lost",
        "describe answered " + std::string(ErrorCodeName(d.error.code)) + ": " + d.error.message);
    return;
  }
  if (IsTerminal(d.value.state)) {
    CheckTerminal(t, d.value, c);
  } else {
    CheckLive(t, d.value, now_ms, c);
  }
}

void Model::CheckTerminal(TaskModel& t, const TaskDescription& d, Counters* c) {
  const Outcome& o = d.outcome();
  if (t.final_seen) {
    if (!t.final_outcome.SameResult(o)) {
      ++c->double_transitions;
      Report(t, "double_transitions",
             std::string("was ") + TaskStateName(t.final_outcome.state) + ", now " +
                 TaskStateName(o.state));
    }
    return;
  }
  std::vector<const Completion*> applied;
  bool explained =
      o.state == TaskState::kTimedOut || (o.state == TaskState::kFailed && t.activity_delete_sent);
  for (const Completion& x : t.completions) {
    if (x.answer == Answer::kApplied) applied.push_back(&x);
    if (MayHaveMade(x, o)) explained = true;
    if (x.answer == Answer::kRefused && x.recorded_state && *x.recorded_state != o.state) {
      ++c->wrong_outcome;
      Report(t, "wrong_outcome",
             std::string("a completion was refused as ") + TaskStateName(*x.recorded_state) +
                 ", the task reads " + TaskStateName(o.state));
    }
  }
  if (applied.size() > 1) {
    ++c->double_transitions;
    Report(t, "double_transitions", std::to_string(applied.size()) + " completions applied");
  } else if (applied.size() == 1 && !Matches(*applied[0], o)) {
    ++c->wrong_outcome;
    Report(t, "wrong_outcome",
           std::string("applied ") + CompletionKindName(applied[0]->kind) + " '" +
               applied[0]->payload + "', the task reads " + TaskStateName(o.state));
  } else if (applied.empty() && !explained) {
    ++c->wrong_outcome;
    Report(t, "wrong_outcome",
           std::string("no call explains ") + TaskStateName(o.state) + " '" + o.output + o.error +
               "'");
  }
  if (o.state == TaskState::kTimedOut) {
    const int64_t earliest = EarliestDeadlineMs(t, o.timeout_kind, d.ended_ms);
    // The server's clock is the same wall clock, in whole ms: 1 ms of rounding either way.
    if (d.ended_ms + 1 < earliest) {
      ++c->timers_early;
      Report(t, "timers_early",
             std::string(TimeoutKindName(o.timeout_kind)) + " timeout at " +
                 std::to_string(d.ended_ms) + ", earliest possible deadline " +
                 std::to_string(earliest));
    }
  }
  t.final_seen = true;
  t.final_cycle = cycle_;
  t.final_outcome = o;
  t.ended_ms = d.ended_ms;
}

void Model::CheckLive(TaskModel& t, const TaskDescription& d, int64_t now_ms, Counters* c) {
  std::string lost;
  if (t.final_seen) lost = std::string("was ") + TaskStateName(t.final_outcome.state);
  for (const Completion& x : t.completions) {
    if (x.answer == Answer::kApplied) lost = std::string(CompletionKindName(x.kind)) + " applied";
    if (x.answer == Answer::kRefused) {
      lost = std::string(CompletionKindName(x.kind)) + " refused as ended";
    }
  }
  if (t.handed_out && d.state == TaskState::kScheduled) lost = "handed out to a worker";
  if (!lost.empty()) {
    ++c->acked_lost;
    Report(t, "acked_lost", lost + ", but the task reads " + TaskStateName(d.state));
    return;
  }
  if (d.state == TaskState::kStarted && !t.activity_arn.empty() && !t.handed_out) {
    // A poll with no answer took it: it started before that cycle's kill at the latest.
    t.start_latest_ms =
        std::max(t.start_latest_ms, kill_ms_.empty() ? now_ms : kill_ms_.rbegin()->second);
  }
  const int64_t latest = LatestDeadlineMs(t, d.state);
  const int64_t back = restarts_.empty() ? 0 : restarts_.back().second;
  if (latest != kNever && now_ms > std::max(latest, back) + kTimerSlackMs &&
      !t.timer_lost_counted) {
    t.timer_lost_counted = true;
    ++c->timers_lost;
    Report(t, "timers_lost",
           std::string(TaskStateName(d.state)) + " at " + std::to_string(now_ms) +
               ", latest possible deadline " + std::to_string(latest));
  }
}

Counters Model::CheckEvents(int64_t wait_ms) {
  const int64_t deadline = SteadyMs() + wait_ms;
  std::unique_lock<std::mutex> lock(mu_);
  auto waiting = [&]() {
    return std::any_of(tasks_.begin(), tasks_.end(), [&](const auto& t) {
      return t->final_seen && !t->event_checked && !events_by_token_.count(t->token);
    });
  };
  while (waiting() && SteadyMs() < deadline) {
    lock.unlock();
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    lock.lock();
  }
  Counters c;
  for (const auto& t : tasks_) {
    if (!t->final_seen || t->event_checked) continue;
    t->event_checked = true;
    auto it = events_by_token_.find(t->token);
    if (it == events_by_token_.end()) {
      ++c.events_missing;
      Report(*t, "events_missing",
             std::string("no event for ") + TaskStateName(t->final_outcome.state));
    } else if (!it->second.outcome.SameResult(t->final_outcome)) {
      ++c.wrong_outcome;
      Report(*t, "wrong_outcome",
             std::string("event says ") + TaskStateName(it->second.outcome.state) +
                 ", the task reads " + TaskStateName(t->final_outcome.state));
    }
  }
  return c;
}

}  // namespace tw::crashtest
