// PostgreSQL 15 as a peer: its best honest implementation of the same semantics. One table of
// tasks and one of outcomes; every transition is one statement (one transaction) whose
// conditional UPDATE and the outcome row's INSERT commit together; polls take the oldest
// SCHEDULED task with FOR UPDATE SKIP LOCKED; a timeout loop scans the partial index on `due`
// (the task's next deadline). synchronous_commit=on, fsync=on: a transition is on disk before
// its answer. A heartbeat moves a deadline only and is committed with synchronous_commit=off,
// as tokenwheel keeps heartbeat deadlines in memory (docs/SEMANTICS.md, "Timeouts").
#include <libpq-fe.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>

#include "tools/bench/child_process.h"
#include "tools/bench/served_system.h"
#include "tools/bench/system.h"

namespace tw::bench {
namespace {

constexpr const char* kSchema = R"sql(
CREATE TABLE tasks (
  id bigserial PRIMARY KEY,
  activity text,                 -- NULL: a callback task
  state smallint NOT NULL,       -- 0 SCHEDULED, 1 STARTED, 2 SUCCEEDED, 3 TIMED_OUT
  input text NOT NULL,
  output text,
  timeout_s int NOT NULL,        -- 0: none
  heartbeat_s int NOT NULL,      -- 0: none
  overall timestamptz,           -- the overall deadline once STARTED
  due timestamptz                -- the next deadline (overall or heartbeat); NULL: none
);
CREATE INDEX tasks_due ON tasks (due) WHERE state IN (0, 1);
CREATE INDEX tasks_queue ON tasks (activity, id) WHERE state = 0;
CREATE TABLE outcomes (
  seq bigserial PRIMARY KEY,
  task_id bigint NOT NULL,
  state smallint NOT NULL,
  output text,
  at timestamptz NOT NULL DEFAULT clock_timestamp()
);
)sql";

// $1 count, $2 timeout_s, $3 heartbeat_s, $4 activity (NULL: callback).
constexpr const char* kIssue = R"sql(
INSERT INTO tasks (activity, state, input, timeout_s, heartbeat_s, overall, due)
SELECT $4, CASE WHEN $4::text IS NULL THEN 1 ELSE 0 END, '{"bench":1}', $2, $3,
       o, CASE WHEN $4::text IS NULL THEN least(o, h) END
FROM generate_series(1, $1::int),
     LATERAL (SELECT CASE WHEN $4::text IS NULL AND $2::int > 0
                          THEN clock_timestamp() + $2::int * interval '1 second' END AS o,
                     CASE WHEN $3::int > 0
                          THEN clock_timestamp() + $3::int * interval '1 second' END AS h) d
RETURNING id
)sql";

// $1 ids, $2 output. Applies only to a STARTED task whose deadline has not passed (a call after
// the deadline loses to the timeout, which the loop records).
constexpr const char* kSucceed = R"sql(
WITH t AS (
  UPDATE tasks SET state = 2, output = $2, due = NULL
  WHERE id = ANY($1::bigint[]) AND state = 1 AND (due IS NULL OR due > clock_timestamp())
  RETURNING id)
INSERT INTO outcomes (task_id, state, output) SELECT id, 2, $2 FROM t RETURNING seq
)sql";

// $1 activity.
constexpr const char* kPoll = R"sql(
WITH c AS (
  SELECT id FROM tasks WHERE activity = $1 AND state = 0 ORDER BY id LIMIT 1
  FOR UPDATE SKIP LOCKED)
UPDATE tasks t SET state = 1,
  overall = CASE WHEN t.timeout_s > 0 THEN clock_timestamp() + t.timeout_s * interval '1 second' END,
  due = least(CASE WHEN t.timeout_s > 0 THEN clock_timestamp() + t.timeout_s * interval '1 second' END,
              CASE WHEN t.heartbeat_s > 0 THEN clock_timestamp() + t.heartbeat_s * interval '1 second' END)
FROM c WHERE t.id = c.id RETURNING t.id
)sql";

// $1 id. set_config(..., true) holds for this statement's own transaction, so its commit does
// not wait for the WAL flush.
constexpr const char* kHeartbeat = R"sql(
UPDATE tasks SET due = least(overall, clock_timestamp() + heartbeat_s * interval '1 second')
FROM (SELECT set_config('synchronous_commit', 'off', true)) s
WHERE id = $1 AND state = 1 AND heartbeat_s > 0 AND due > clock_timestamp() RETURNING id
)sql";

// $1 limit. Answers each ended task's deadline in ms since the epoch.
constexpr const char* kTimeouts = R"sql(
WITH d AS (
  SELECT id, due FROM tasks WHERE state IN (0, 1) AND due <= clock_timestamp()
  ORDER BY due LIMIT $1 FOR UPDATE SKIP LOCKED),
u AS (UPDATE tasks t SET state = 3, due = NULL FROM d WHERE t.id = d.id RETURNING t.id, d.due),
o AS (INSERT INTO outcomes (task_id, state) SELECT id, 3 FROM u)
SELECT (extract(epoch FROM due) * 1000)::bigint FROM u
)sql";

// How long the timeout loop waits when nothing is due: the peers' timer tick.

struct PgResult {
  PGresult* r;
  explicit PgResult(PGresult* res) : r(res) {}
  ~PgResult() { PQclear(r); }
  PgResult(const PgResult&) = delete;
  PgResult& operator=(const PgResult&) = delete;
};

class PgConn {
 public:
  explicit PgConn(const std::string& conninfo) : c_(PQconnectdb(conninfo.c_str())) {}
  ~PgConn() { PQfinish(c_); }
  PgConn(const PgConn&) = delete;
  PgConn& operator=(const PgConn&) = delete;
  bool ok() const { return PQstatus(c_) == CONNECTION_OK; }
  std::string error() const { return PQerrorMessage(c_); }
  PGconn* get() { return c_; }

  // Runs `sql` with text parameters; nullptr params are NULL.
  std::unique_ptr<PgResult> Exec(const char* sql, const std::vector<const char*>& params) {
    return std::make_unique<PgResult>(PQexecParams(c_, sql, static_cast<int>(params.size()),
                                                   nullptr, params.data(), nullptr, nullptr, 0));
  }

 private:
  PGconn* c_;
};

bool ResultOk(const PgResult& r) {
  const ExecStatusType s = PQresultStatus(r.r);
  return s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK;
}

std::string ResultError(const PgResult& r) {
  return std::string("postgres: ") + PQresultErrorMessage(r.r);
}

std::string IdArray(const std::vector<std::string>& ids) {
  std::string a = "{";
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i > 0) a += ',';
    a += ids[i];
  }
  return a + "}";
}

class PgClient final : public Client {
 public:
  explicit PgClient(std::unique_ptr<PgConn> c) : c_(std::move(c)) {}

  CallResult Issue(const IssueSpec& spec, std::vector<std::string>* ids) override {
    const std::string n = std::to_string(spec.count);
    const std::string t = std::to_string(spec.timeout_s);
    const std::string h = std::to_string(spec.heartbeat_s);
    auto r = c_->Exec(kIssue, {n.c_str(), t.c_str(), h.c_str(), spec.activity ? "bench" : nullptr});
    if (!ResultOk(*r)) return CallResult::Failed(ResultError(*r));
    for (int i = 0; i < PQntuples(r->r); ++i) ids->push_back(PQgetvalue(r->r, i, 0));
    return CallResult::Ok();
  }

  CallResult Succeed(const std::vector<std::string>& ids, int* applied) override {
    const std::string a = IdArray(ids);
    auto r = c_->Exec(kSucceed, {a.c_str(), "{\"ok\":1}"});
    if (!ResultOk(*r)) return CallResult::Failed(ResultError(*r));
    *applied = PQntuples(r->r);
    return CallResult::Ok();
  }

  CallResult Poll(std::string* id) override {
    auto r = c_->Exec(kPoll, {"bench"});
    if (!ResultOk(*r)) return CallResult::Failed(ResultError(*r));
    id->clear();
    if (PQntuples(r->r) == 1) *id = PQgetvalue(r->r, 0, 0);
    return CallResult::Ok();
  }

  CallResult Heartbeat(const std::string& id) override {
    auto r = c_->Exec(kHeartbeat, {id.c_str()});
    if (!ResultOk(*r)) return CallResult::Failed(ResultError(*r));
    return PQntuples(r->r) == 1 ? CallResult::Ok() : CallResult::Refused();
  }

 private:
  std::unique_ptr<PgConn> c_;
};

// The peer's timeout loop: its own connection and thread, started by WatchTimeouts; ends due
// tasks in transactions of up to kTimeoutBatchMax and records each one's lateness.
class PgTimeoutLoop final : public PolledTimeoutLoop {
 public:
  explicit PgTimeoutLoop(std::unique_ptr<PgConn> c) : c_(std::move(c)) { Start(); }
  ~PgTimeoutLoop() override { Stop(); }

 private:
  bool EndDue(std::vector<int64_t>* deadlines_ms, std::string* error) override {
    auto r = c_->Exec(kTimeouts, {limit_.c_str()});
    if (!ResultOk(*r)) {
      *error = ResultError(*r);
      return false;
    }
    for (int i = 0; i < PQntuples(r->r); ++i) {
      deadlines_ms->push_back(std::strtoll(PQgetvalue(r->r, i, 0), nullptr, 10));
    }
    return true;
  }

  std::unique_ptr<PgConn> c_;
  const std::string limit_ = std::to_string(kTimeoutBatchMax);
};

class PostgresSystem final : public PeerSystem {
 public:
  using PeerSystem::PeerSystem;
  ~PostgresSystem() override { Stop(); }

  std::string name() const override { return "postgres"; }
  std::string durability() const override {
    return "PostgreSQL 15: fsync=on, synchronous_commit=on, wal_sync_method=fdatasync, "
           "full_page_writes=on (heartbeats: synchronous_commit=off)";
  }

  bool Start(std::string* error) override {
    if (!MakeDir("postgres", error)) return false;
    const RunAs as = UnprivilegedUser();
    if (as.uid != 0 && ::chown(dir_.c_str(), as.uid, as.gid) != 0) {
      *error = "chown " + dir_ + " to the unprivileged user failed";
      return false;
    }
    ChildProcess initdb({o_.pg_bin_dir + "/initdb", "-D", dir_ + "/data", "-U", "bench",
                         "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync"},
                        dir_ + "/initdb.log", as);
    if (!initdb.Start(error)) return false;
    if (const int rc = initdb.Wait(kStartTimeoutMs); rc != 0) {
      *error = "initdb exited " + std::to_string(rc) + ":\n" + initdb.LogTail(2000);
      return false;
    }
    port_ = FreeLoopbackPort();
    if (!StartServer(error)) return false;
    PgConn c(ConnInfo());
    // Multi-statement DDL goes through the simple protocol.
    PgResult ddl(PQexec(c.get(), kSchema));
    if (!ResultOk(ddl)) {
      *error = ResultError(ddl);
      return false;
    }
    return true;
  }

  std::unique_ptr<Client> Connect(std::string* error) override {
    auto c = std::make_unique<PgConn>(ConnInfo());
    if (!c->ok()) {
      *error = "postgres connect: " + c->error();
      return nullptr;
    }
    return std::make_unique<PgClient>(std::move(c));
  }

  std::unique_ptr<TimeoutWatch> WatchTimeouts(std::string* error) override {
    auto c = std::make_unique<PgConn>(ConnInfo());
    if (!c->ok()) {
      *error = "postgres connect: " + c->error();
      return nullptr;
    }
    return std::make_unique<PgTimeoutLoop>(std::move(c));
  }

  int64_t LiveTasks() override {
    PgConn c(ConnInfo());
    PgResult r(PQexec(c.get(), "SELECT count(*) FROM tasks WHERE state IN (0, 1)"));
    if (!ResultOk(r) || PQntuples(r.r) != 1) return -1;
    return std::strtoll(PQgetvalue(r.r, 0, 0), nullptr, 10);
  }

 private:
  std::string ConnInfo() const {
    return "host=127.0.0.1 port=" + std::to_string(port_) +
           " dbname=postgres user=bench connect_timeout=10";
  }

  // Starts postgres and waits until it accepts a connection.
  bool StartServer(std::string* error) override {
    server_ =
        std::make_unique<ChildProcess>(std::vector<std::string>{o_.pg_bin_dir + "/postgres",
                                                                "-D",
                                                                dir_ + "/data",
                                                                "-c",
                                                                "listen_addresses=127.0.0.1",
                                                                "-c",
                                                                "port=" + std::to_string(port_),
                                                                "-c",
                                                                "unix_socket_directories=",
                                                                "-c",
                                                                "fsync=on",
                                                                "-c",
                                                                "synchronous_commit=on",
                                                                "-c",
                                                                "full_page_writes=on",
                                                                "-c",
                                                                "wal_sync_method=fdatasync",
                                                                "-c",
                                                                "max_connections=300",
                                                                "-c",
                                                                "shared_buffers=512MB",
                                                                "-c",
                                                                "max_wal_size=4GB"},
                                       dir_ + "/postgres.log", UnprivilegedUser());
    if (!server_->Start(error)) return false;
    const int64_t deadline = SteadyMs() + kStartTimeoutMs;
    while (SteadyMs() < deadline) {
      if (!server_->Running()) {
        *error = "postgres exited during start:\n" + server_->LogTail(3000);
        return false;
      }
      PgConn c(ConnInfo());
      if (c.ok()) {
        PgResult r(PQexec(c.get(), "SELECT 1"));
        if (ResultOk(r)) return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    *error = "postgres did not accept connections in time:\n" + server_->LogTail(3000);
    return false;
  }
};

}  // namespace

std::unique_ptr<System> MakePostgres(const SystemOptions& o) {
  return std::make_unique<PostgresSystem>(o);
}

}  // namespace tw::bench
