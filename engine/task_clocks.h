// A live task's clocks: the one place that sets its deadlines and decides which one ran out.
//   SCHEDULED  deadline_ms = schedule-to-start (from the issue, or from a return to the queue)
//   STARTED    deadline_ms = overall (from the start); heartbeat_deadline_ms = last heartbeat
//              (or the start) + heartbeat_s
// 0 is "no deadline". The task's timer is armed for the earliest deadline (ArmedDeadline); a
// heartbeat moves heartbeat_deadline_ms without touching the wheel, and the firing compares
// with Due and re-arms (lazy re-arm).
// Thread: the engine thread.
#pragma once

#include <algorithm>
#include <cstdint>

#include "engine/assert.h"
#include "engine/store.h"
#include "engine/task_table.h"
#include "engine/types.h"

namespace tw::clocks {

inline int64_t SecondsToMs(uint32_t s) { return static_cast<int64_t>(s) * 1000; }

// now + s, or 0 (none) when s is 0.
inline int64_t After(int64_t now_ms, uint32_t s) { return s == 0 ? 0 : now_ms + SecondsToMs(s); }

// Queued (issued, or handed back): only the schedule-to-start clock runs.
inline void OnQueued(LiveTask& t, int64_t now_ms) {
  TW_ASSERT(t.state == TaskState::kScheduled);
  t.deadline_ms = After(now_ms, t.schedule_to_start_s);
}

// Started (a worker took it, or a callback task was issued): the overall and heartbeat clocks
// start now.
inline void OnStarted(LiveTask& t, int64_t now_ms) {
  TW_ASSERT(t.state == TaskState::kStarted);
  t.deadline_ms = After(now_ms, t.timeout_s);
  t.heartbeat_deadline_ms = After(now_ms, t.heartbeat_s);
}

inline void OnHeartbeat(LiveTask& t, int64_t now_ms) {
  TW_ASSERT(t.state == TaskState::kStarted);
  if (t.heartbeat_s != 0) t.heartbeat_deadline_ms = now_ms + SecondsToMs(t.heartbeat_s);
}

// From the live record after a restart. A crash may have lost heartbeats (they are not
// persisted): never time out a worker that was on time, so the heartbeat clock restarts.
inline void OnRecovered(LiveTask& t, const LiveRecord& r, int64_t now_ms) {
  if (r.state == TaskState::kScheduled) {
    t.deadline_ms = r.schedule_to_start_deadline_ms;
    return;
  }
  TW_ASSERT(r.state == TaskState::kStarted);
  t.deadline_ms = r.overall_deadline_ms;
  t.heartbeat_deadline_ms =
      r.heartbeat_s == 0 ? 0 : std::max(r.heartbeat_deadline_ms, After(now_ms, r.heartbeat_s));
}

// The deadline the task's timer is armed for: the earliest non-zero one; 0 = no timer.
inline int64_t ArmedDeadline(const LiveTask& t) {
  const int64_t a = t.deadline_ms;
  if (t.state != TaskState::kStarted || t.heartbeat_deadline_ms == 0) return a;
  const int64_t b = t.heartbeat_deadline_ms;
  return a == 0 ? b : std::min(a, b);
}

// The deadline of the clock `kind` (what Due answered); 0 for kNone.
inline int64_t DeadlineOf(const LiveTask& t, TimeoutKind kind) {
  switch (kind) {
    case TimeoutKind::kHeartbeat:
      return t.heartbeat_deadline_ms;
    case TimeoutKind::kOverall:
    case TimeoutKind::kScheduleToStart:
      return t.deadline_ms;
    case TimeoutKind::kNone:
      break;
  }
  return 0;
}

// Which clock has run out at now_ms (kNone if none). When both of a started task's clocks ran
// out, the one that ran out first is the cause.
inline TimeoutKind Due(const LiveTask& t, int64_t now_ms) {
  auto passed = [now_ms](int64_t deadline) { return deadline != 0 && deadline <= now_ms; };
  if (t.state == TaskState::kScheduled) {
    return passed(t.deadline_ms) ? TimeoutKind::kScheduleToStart : TimeoutKind::kNone;
  }
  const bool heartbeat = passed(t.heartbeat_deadline_ms);
  const bool overall = passed(t.deadline_ms);
  if (heartbeat && overall) {
    return t.heartbeat_deadline_ms < t.deadline_ms ? TimeoutKind::kHeartbeat
                                                   : TimeoutKind::kOverall;
  }
  if (heartbeat) return TimeoutKind::kHeartbeat;
  return overall ? TimeoutKind::kOverall : TimeoutKind::kNone;
}

}  // namespace tw::clocks
