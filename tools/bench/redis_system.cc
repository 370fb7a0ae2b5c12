// Redis 7 as a peer: its best honest implementation of the same semantics. appendonly yes with
// appendfsync always: every write command is fsynced before its reply. Each transition is one Lua
// script (atomic, and one AOF entry): a task is a hash t:<id>; the sorted set `due` holds each
// live task's next deadline (ms); an activity's queue is the list `queue`; outcomes are appended
// to the list `outcomes`. A timeout loop ends due tasks, kTimeoutBatchMax per script.
#include <hiredis/hiredis.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <mutex>
#include <thread>

#include "tools/bench/child_process.h"
#include "tools/bench/served_system.h"
#include "tools/bench/system.h"

namespace tw::bench {
namespace {

// The scripts read the server's clock (TIME): effects replication, the default since Redis 5.
constexpr const char* kNowLua =
    "local t = redis.call('TIME') local now = t[1] * 1000 + math.floor(t[2] / 1000) ";

// ARGV: count, timeout_s, heartbeat_s, activity ('' for a callback task). Answers the ids.
constexpr const char* kIssueLua = R"lua(
local n, to, hb, act = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local ids = {}
for i = 1, n do
  local id = redis.call('INCR', 'next_id')
  local k = 't:' .. id
  if act == '' then
    local overall = (to > 0) and (now + to * 1000) or 0
    local due = overall
    if hb > 0 and (due == 0 or now + hb * 1000 < due) then due = now + hb * 1000 end
    redis.call('HSET', k, 'state', 1, 'input', '{"bench":1}', 'to', to, 'hb', hb,
               'overall', overall)
    if due > 0 then redis.call('ZADD', 'due', due, id) end
  else
    redis.call('HSET', k, 'state', 0, 'input', '{"bench":1}', 'to', to, 'hb', hb, 'overall', 0)
    redis.call('RPUSH', 'queue', id)
  end
  ids[i] = id
end
return ids
)lua";

// ARGV: output, ids... Applies only to a STARTED task whose deadline has not passed. Answers the
// number applied.
constexpr const char* kSucceedLua = R"lua(
local applied = 0
for i = 2, #ARGV do
  local id = ARGV[i]
  local k = 't:' .. id
  if redis.call('HGET', k, 'state') == '1' then
    local due = redis.call('ZSCORE', 'due', id)
    if not due or tonumber(due) > now then
      redis.call('HSET', k, 'state', 2, 'output', ARGV[1])
      redis.call('ZREM', 'due', id)
      redis.call('RPUSH', 'outcomes', id .. ' SUCCEEDED')
      applied = applied + 1
    end
  end
end
return applied
)lua";

// Takes the oldest SCHEDULED task: its id, or false.
constexpr const char* kPollLua = R"lua(
local id = redis.call('LPOP', 'queue')
if not id then return false end
local k = 't:' .. id
local to, hb = tonumber(redis.call('HGET', k, 'to')), tonumber(redis.call('HGET', k, 'hb'))
local overall = (to > 0) and (now + to * 1000) or 0
local due = overall
if hb > 0 and (due == 0 or now + hb * 1000 < due) then due = now + hb * 1000 end
redis.call('HSET', k, 'state', 1, 'overall', overall)
if due > 0 then redis.call('ZADD', 'due', due, id) end
return id
)lua";

// ARGV: id. 1 if the heartbeat applied.
constexpr const char* kHeartbeatLua = R"lua(
local id = ARGV[1]
local k = 't:' .. id
if redis.call('HGET', k, 'state') ~= '1' then return 0 end
local hb = tonumber(redis.call('HGET', k, 'hb'))
local due = redis.call('ZSCORE', 'due', id)
if hb == 0 or not due or tonumber(due) <= now then return 0 end
local overall = tonumber(redis.call('HGET', k, 'overall'))
local nd = now + hb * 1000
if overall > 0 and overall < nd then nd = overall end
redis.call('ZADD', 'due', nd, id)
return 1
)lua";

// ARGV: limit. Ends due tasks; answers their deadlines (ms).
constexpr const char* kTimeoutsLua = R"lua(
local due = redis.call('ZRANGEBYSCORE', 'due', '-inf', now, 'WITHSCORES', 'LIMIT', 0, ARGV[1])
local out = {}
for i = 1, #due, 2 do
  local id = due[i]
  redis.call('HSET', 't:' .. id, 'state', 3)
  redis.call('ZREM', 'due', id)
  redis.call('RPUSH', 'outcomes', id .. ' TIMED_OUT')
  out[#out + 1] = due[i + 1]
end
return out
)lua";

struct Reply {
  redisReply* r;
  explicit Reply(void* p) : r(static_cast<redisReply*>(p)) {}
  ~Reply() {
    if (r != nullptr) freeReplyObject(r);
  }
  Reply(const Reply&) = delete;
  Reply& operator=(const Reply&) = delete;
};

class RedisConn {
 public:
  RedisConn(int port, int64_t timeout_ms) {
    const timeval tv{timeout_ms / 1000, static_cast<suseconds_t>((timeout_ms % 1000) * 1000)};
    c_ = redisConnectWithTimeout("127.0.0.1", port, tv);
    if (c_ != nullptr && c_->err == 0) redisSetTimeout(c_, tv);
  }
  ~RedisConn() {
    if (c_ != nullptr) redisFree(c_);
  }
  RedisConn(const RedisConn&) = delete;
  RedisConn& operator=(const RedisConn&) = delete;
  bool ok() const { return c_ != nullptr && c_->err == 0; }
  std::string error() const { return c_ == nullptr ? "out of memory" : c_->errstr; }

  Reply Command(const std::vector<std::string>& args) {
    std::vector<const char*> argv;
    std::vector<size_t> lens;
    for (const std::string& a : args) {
      argv.push_back(a.data());
      lens.push_back(a.size());
    }
    return Reply(redisCommandArgv(c_, static_cast<int>(args.size()), argv.data(), lens.data()));
  }

  // Loads the scripts (SCRIPT LOAD); false with *error set on failure.
  bool LoadScripts(std::string* error) {
    const char* bodies[] = {kIssueLua, kSucceedLua, kPollLua, kHeartbeatLua, kTimeoutsLua};
    for (int i = 0; i < kScripts; ++i) {
      Reply r = Command({"SCRIPT", "LOAD", std::string(kNowLua) + bodies[i]});
      if (r.r == nullptr || r.r->type != REDIS_REPLY_STRING) {
        *error = "redis SCRIPT LOAD: " + Describe(r);
        return false;
      }
      sha_[i] = std::string(r.r->str, r.r->len);
    }
    return true;
  }

  enum Script { kIssue, kSucceed, kPoll, kHeartbeat, kTimeouts, kScripts };
  Reply Eval(Script s, const std::vector<std::string>& argv) {
    std::vector<std::string> args = {"EVALSHA", sha_[s], "0"};
    args.insert(args.end(), argv.begin(), argv.end());
    return Command(args);
  }

  std::string Describe(const Reply& r) const {
    if (r.r == nullptr) return "no reply: " + error();
    if (r.r->type == REDIS_REPLY_ERROR) return std::string(r.r->str, r.r->len);
    return "reply type " + std::to_string(r.r->type);
  }

 private:
  redisContext* c_ = nullptr;
  std::string sha_[kScripts];
};

std::string Str(const redisReply* r) {
  if (r->type == REDIS_REPLY_INTEGER) return std::to_string(r->integer);
  return std::string(r->str, r->len);
}

class RedisClient final : public Client {
 public:
  explicit RedisClient(std::unique_ptr<RedisConn> c) : c_(std::move(c)) {}

  CallResult Issue(const IssueSpec& spec, std::vector<std::string>* ids) override {
    Reply r = c_->Eval(RedisConn::kIssue,
                       {std::to_string(spec.count), std::to_string(spec.timeout_s),
                        std::to_string(spec.heartbeat_s), spec.activity ? "bench" : ""});
    if (r.r == nullptr || r.r->type != REDIS_REPLY_ARRAY) {
      return CallResult::Failed("redis issue: " + c_->Describe(r));
    }
    for (size_t i = 0; i < r.r->elements; ++i) ids->push_back(Str(r.r->element[i]));
    return CallResult::Ok();
  }

  CallResult Succeed(const std::vector<std::string>& ids, int* applied) override {
    std::vector<std::string> argv = {"{\"ok\":1}"};
    argv.insert(argv.end(), ids.begin(), ids.end());
    Reply r = c_->Eval(RedisConn::kSucceed, argv);
    if (r.r == nullptr || r.r->type != REDIS_REPLY_INTEGER) {
      return CallResult::Failed("redis succeed: " + c_->Describe(r));
    }
    *applied = static_cast<int>(r.r->integer);
    return CallResult::Ok();
  }

  CallResult Poll(std::string* id) override {
    Reply r = c_->Eval(RedisConn::kPoll, {});
    if (r.r == nullptr || r.r->type == REDIS_REPLY_ERROR) {
      return CallResult::Failed("redis poll: " + c_->Describe(r));
    }
    id->clear();
    if (r.r->type == REDIS_REPLY_STRING || r.r->type == REDIS_REPLY_INTEGER) *id = Str(r.r);
    return CallResult::Ok();
  }

  CallResult Heartbeat(const std::string& id) override {
    Reply r = c_->Eval(RedisConn::kHeartbeat, {id});
    if (r.r == nullptr || r.r->type != REDIS_REPLY_INTEGER) {
      return CallResult::Failed("redis heartbeat: " + c_->Describe(r));
    }
    return r.r->integer == 1 ? CallResult::Ok() : CallResult::Refused();
  }

 private:
  std::unique_ptr<RedisConn> c_;
};

class RedisTimeoutLoop final : public PolledTimeoutLoop {
 public:
  explicit RedisTimeoutLoop(std::unique_ptr<RedisConn> c) : c_(std::move(c)) { Start(); }
  ~RedisTimeoutLoop() override { Stop(); }

 private:
  bool EndDue(std::vector<int64_t>* deadlines_ms, std::string* error) override {
    Reply r = c_->Eval(RedisConn::kTimeouts, {limit_});
    if (r.r == nullptr || r.r->type != REDIS_REPLY_ARRAY) {
      *error = "redis timeouts: " + c_->Describe(r);
      return false;
    }
    for (size_t i = 0; i < r.r->elements; ++i) {
      deadlines_ms->push_back(std::strtoll(Str(r.r->element[i]).c_str(), nullptr, 10));
    }
    return true;
  }

  std::unique_ptr<RedisConn> c_;
  const std::string limit_ = std::to_string(kTimeoutBatchMax);
};

class RedisSystem final : public PeerSystem {
 public:
  using PeerSystem::PeerSystem;
  ~RedisSystem() override { Stop(); }

  std::string name() const override { return "redis"; }
  std::string durability() const override {
    return "Redis 7: appendonly yes, appendfsync always (fsync before each reply), no RDB "
           "snapshots";
  }

  bool Start(std::string* error) override {
    if (!MakeDir("redis", error)) return false;
    port_ = FreeLoopbackPort();
    return StartServer(error);
  }

  std::unique_ptr<Client> Connect(std::string* error) override {
    auto c = std::make_unique<RedisConn>(port_, kCallTimeoutMs);
    if (!c->ok()) {
      *error = "redis connect: " + c->error();
      return nullptr;
    }
    if (!c->LoadScripts(error)) return nullptr;
    return std::make_unique<RedisClient>(std::move(c));
  }

  std::unique_ptr<TimeoutWatch> WatchTimeouts(std::string* error) override {
    auto c = std::make_unique<RedisConn>(port_, kCallTimeoutMs);
    if (!c->ok()) {
      *error = "redis connect: " + c->error();
      return nullptr;
    }
    if (!c->LoadScripts(error)) return nullptr;
    return std::make_unique<RedisTimeoutLoop>(std::move(c));
  }

  int64_t LiveTasks() override {
    RedisConn c(port_, kCallTimeoutMs);
    if (!c.ok()) return -1;
    Reply due = c.Command({"ZCARD", "due"});
    Reply queued = c.Command({"LLEN", "queue"});
    if (due.r == nullptr || queued.r == nullptr || due.r->type != REDIS_REPLY_INTEGER ||
        queued.r->type != REDIS_REPLY_INTEGER) {
      return -1;
    }
    return due.r->integer + queued.r->integer;
  }

 private:
  // Starts redis-server and waits until PING answers PONG (not LOADING).
  bool StartServer(std::string* error) override {
    server_ = std::make_unique<ChildProcess>(
        std::vector<std::string>{o_.redis_server, "--bind", "127.0.0.1", "--port",
                                 std::to_string(port_), "--dir", dir_, "--appendonly", "yes",
                                 "--appendfsync", "always", "--save", "", "--daemonize", "no",
                                 "--protected-mode", "yes", "--maxclients", "1000"},
        dir_ + "/redis.log", RunAs{});
    if (!server_->Start(error)) return false;
    const int64_t deadline = SteadyMs() + kStartTimeoutMs;
    while (SteadyMs() < deadline) {
      if (!server_->Running()) {
        *error = "redis-server exited during start:\n" + server_->LogTail(3000);
        return false;
      }
      RedisConn c(port_, 1000);
      if (c.ok()) {
        Reply r = c.Command({"PING"});
        if (r.r != nullptr && r.r->type == REDIS_REPLY_STATUS) return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    *error = "redis-server did not answer PING in time:\n" + server_->LogTail(3000);
    return false;
  }
};

}  // namespace

std::unique_ptr<System> MakeRedis(const SystemOptions& o) {
  return std::make_unique<RedisSystem>(o);
}

}  // namespace tw::bench
