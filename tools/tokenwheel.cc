// tokenwheel: the command-line client of tokenwheeld (Cap'n Proto, through rpc/client.h).
//
// Output: JSON on stdout, one object (or one per line for `events watch`). On an error it prints
// {"error": CODE, "message": TEXT} (plus "reason" and its detail for a refused completion) and
// exits 2 for a typed error of the API, 1 for connection or usage trouble.
//
// Values. --input, --output, --error and --cause take the value itself or, as the AWS CLI reads
// them, file://PATH (the whole file; a relative PATH from the current directory) or - (all of
// standard input). A payload can be larger than one argument may be (128 KiB on Linux,
// MAX_ARG_STRLEN). Reading stops past kValueBytesMax (1 MiB, a request's limit) with a usage
// error. Standard input can be read once: only one option of a command may be -.
//
// Integers are decimal (tools/cli_args.h): --timeout 010 is ten seconds; 0x10 is a usage error.
#include <fcntl.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "engine/engine.h"
#include "engine/key_file.h"
#include "engine/limits.h"
#include "engine/types.h"
#include "rpc/auth.h"
#include "rpc/client.h"
#include "rpc/json_forms.h"
#include "tools/cli_args.h"

namespace {

using nlohmann::json;
using tw::rpc::Client;

constexpr int kExitTypedError = 2;
constexpr int kExitTrouble = 1;
constexpr int64_t kWatchPollMs = 1000;
// A value read from a file or stdin: more than one request can carry is refused before it is
// sent (the server would drop the connection), and a wrong file is not read to its end.
constexpr size_t kValueBytesMax = tw::limits::kRequestBytesMax;
constexpr size_t kReadChunkBytes = 64 << 10;
constexpr std::string_view kFilePrefix = "file://";
constexpr char kValueHelp[] = "; file://PATH reads a file, - reads stdin";

void Print(const json& j) {
  // Payloads are the caller's bytes: never let a stray invalid UTF-8 byte abort the output.
  std::cout << tw::rpc::Dump(j) << "\n" << std::flush;
}

int PrintError(const tw::Error& e) {
  Print(tw::rpc::ErrorJson(e));
  return tw::rpc::IsTransportError(e) ? kExitTrouble : kExitTypedError;
}

int UsageError(const std::string& message) {
  Print(json{{"error", "UsageError"}, {"message", message}});
  return kExitTrouble;
}

using tw::rpc::ActivityJson;
using tw::rpc::CompletionJson;
using tw::rpc::DescriptionJson;
using tw::rpc::EventJson;
using tw::rpc::StorageJson;

json StatsJson(const tw::rpc::ServerStats& s) {
  json j = tw::rpc::EngineStatsJson(s.engine);
  j["connections"] = s.connections;
  j["subscriptions"] = s.subscriptions;
  j["replyHandoffs"] = s.reply_handoffs;
  j["repliesDelivered"] = s.replies_delivered;
  return j;
}

// Prints the value as JSON (through `to_json`) or the error; returns the exit code.
template <typename T, typename ToJson>
int Answer(const tw::Result<T>& r, ToJson&& to_json) {
  if (!r.ok()) return PrintError(r.error);
  Print(to_json(r.value));
  return 0;
}

json EmptyJson(const tw::Empty&) { return json::object(); }

// The server answered, but cannot serve calls while its storage is failed: a typed
// ServiceUnavailable (exit 2) that says why, so that a health check fails.
int Ping(tw::rpc::Client& client, const std::string& payload) {
  tw::Result<tw::rpc::PingReply> r = client.Ping(payload);
  if (!r.ok()) return PrintError(r.error);
  if (!r.value.storage.ok) {
    Print(json{{"error", tw::ErrorCodeName(tw::ErrorCode::kUnavailable)},
               {"message", r.value.storage.error},
               {"storage", StorageJson(r.value.storage)}});
    return kExitTypedError;
  }
  Print(json{{"payload", r.value.payload}});
  return 0;
}

// Everything the command line can say, parsed by CLI11 into one place.
struct Args {
  std::string server;
  // How to reach a server with auth or TLS (rpc/client.h, ClientOptions).
  std::string auth_file;
  std::string tls_ca;
  std::string tls_cert;
  std::string tls_key;
  std::string tls_server_name;
  bool tls = false;
  std::string
      name_or_arn;  // activity create NAME / delete|describe ARN; task poll ARN; backup NAME
  std::string token;
  uint32_t max_results = 0;
  std::string next_token;
  bool callback = false;
  std::string activity;
  std::string input = "{}";
  uint32_t timeout_s = 0;
  uint32_t heartbeat_s = 0;
  uint32_t schedule_to_start_s = 0;
  std::string key;
  std::string correlation;
  std::string worker;
  uint32_t wait_s = 0;
  std::optional<std::string> output;
  std::optional<std::string> error;
  std::optional<std::string> cause;
  std::string consumer;
  uint64_t from_seq = 0;
  std::string payload_key_file;  // keygen
  int key_id = -1;               // keygen: -1 = the largest listed + 1
  uint64_t count = 0;
  bool no_ack = false;
  std::string payload = "ping";
};

// Reads fd to its end into *out, at most kValueBytesMax bytes. "" on success, else why not.
std::string ReadAll(int fd, std::string* out) {
  std::string chunk(kReadChunkBytes, '\0');
  for (;;) {
    const ssize_t n = read(fd, chunk.data(), chunk.size());
    if (n == 0) return {};
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return std::strerror(errno);
    out->append(chunk.data(), static_cast<size_t>(n));
    if (out->size() > kValueBytesMax) {
      return "more than " + std::to_string(kValueBytesMax) + " bytes, a request's limit";
    }
  }
}

// Replaces the values given as file://PATH or - by what they name (see the top of this file).
class ValueReader {
 public:
  // *value was given to `option`. "" on success, else a usage message.
  std::string Resolve(const std::string& option, std::string* value) {
    if (*value == "-") return FromStdin(option, value);
    if (value->starts_with(kFilePrefix)) return FromFile(option, value);
    return {};
  }
  std::string Resolve(const std::string& option, std::optional<std::string>* value) {
    return value->has_value() ? Resolve(option, &value->value()) : std::string();
  }

 private:
  std::string FromStdin(const std::string& option, std::string* value) {
    if (!stdin_option_.empty()) {
      return stdin_option_ + " and " + option + " both read stdin (-); only one option may";
    }
    stdin_option_ = option;
    std::string data;
    const std::string problem = ReadAll(STDIN_FILENO, &data);
    if (!problem.empty()) return option + ": cannot read stdin: " + problem;
    *value = std::move(data);
    return {};
  }

  std::string FromFile(const std::string& option, std::string* value) {
    const std::string path = value->substr(kFilePrefix.size());
    const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return option + ": cannot read " + *value + ": " + std::strerror(errno);
    std::string data;
    const std::string problem = ReadAll(fd, &data);
    close(fd);
    if (!problem.empty()) return option + ": cannot read " + *value + ": " + problem;
    *value = std::move(data);
    return {};
  }

  std::string stdin_option_;  // the option that read stdin, if one did
};

// Reads every value option given as file://PATH or -. "" on success, else a usage message.
std::string ReadValues(Args& a) {
  ValueReader reader;
  std::string problem = reader.Resolve("--input", &a.input);
  if (problem.empty()) problem = reader.Resolve("--output", &a.output);
  if (problem.empty()) problem = reader.Resolve("--error", &a.error);
  if (problem.empty()) problem = reader.Resolve("--cause", &a.cause);
  return problem;
}

int WatchEvents(Client& client, const Args& a) {
  auto sub = client.Subscribe(a.consumer, a.from_seq);
  if (!sub.ok()) return PrintError(sub.error);
  uint64_t printed = 0;
  while (a.count == 0 || printed < a.count) {
    auto events = sub.value->Next(kWatchPollMs);
    if (!events.ok()) return PrintError(events.error);
    uint64_t last = 0;
    for (const tw::OutcomeEvent& e : events.value) {
      if (a.count != 0 && printed == a.count) break;
      Print(EventJson(e));
      last = e.seq;
      ++printed;
    }
    // Acknowledge what was printed (and flushed): at-least-once toward whoever reads stdout.
    if (last != 0 && !a.no_ack) {
      auto acked = client.AckEvents(a.consumer, last);
      if (!acked.ok()) return PrintError(acked.error);
    }
  }
  return 0;
}

int IssueTask(Client& client, const Args& a) {
  if (a.callback == !a.activity.empty())
    return UsageError("give exactly one of --callback, --activity ARN");
  tw::IssueTaskRequest req;
  req.activity_arn = a.activity;
  req.input = a.input;
  req.timeout_s = a.timeout_s;
  req.heartbeat_s = a.heartbeat_s;
  req.schedule_to_start_s = a.schedule_to_start_s;
  req.idempotency_key = a.key;
  req.correlation = a.correlation;
  return Answer(client.IssueTask(req), [](const tw::IssueTaskReply& r) {
    json j{{"taskToken", r.token}};
    if (r.existing) j["existing"] = true;
    return j;
  });
}

int PollTask(Client& client, const Args& a) {
  tw::GetActivityTaskRequest req{a.name_or_arn, a.worker};
  return Answer(client.GetActivityTask(req, a.wait_s), [](const tw::GetActivityTaskReply& r) {
    if (r.token.empty()) return json::object();
    return json{{"taskToken", r.token}, {"input", r.input}};
  });
}

// Runs the one subcommand that was chosen.
int Dispatch(CLI::App& app, Client& client, const Args& a) {
  auto chosen = [&](const char* group, const char* cmd) {
    CLI::App* g = app.get_subcommand(group);
    return g->parsed() && g->get_subcommand(cmd)->parsed();
  };
  if (app.get_subcommand("ping")->parsed()) return Ping(client, a.payload);
  if (app.get_subcommand("stats")->parsed()) return Answer(client.Stats(), StatsJson);
  if (chosen("activity", "create"))
    return Answer(client.CreateActivity(a.name_or_arn), ActivityJson);
  if (chosen("activity", "delete")) return Answer(client.DeleteActivity(a.name_or_arn), EmptyJson);
  if (chosen("activity", "describe")) {
    return Answer(client.DescribeActivity(a.name_or_arn), ActivityJson);
  }
  if (chosen("activity", "list")) {
    return Answer(client.ListActivities(a.max_results, a.next_token),
                  [](const tw::ListActivitiesReply& r) {
                    json list = json::array();
                    for (const auto& act : r.activities) list.push_back(ActivityJson(act));
                    json j{{"activities", list}};
                    if (!r.next_token.empty()) j["nextToken"] = r.next_token;
                    return j;
                  });
  }
  if (chosen("task", "issue")) return IssueTask(client, a);
  if (chosen("task", "poll")) return PollTask(client, a);
  if (chosen("task", "succeed")) {
    return Answer(client.SendTaskSuccess(tw::SendTaskSuccessRequest{a.token, a.output}),
                  CompletionJson);
  }
  if (chosen("task", "fail")) {
    return Answer(client.SendTaskFailure(tw::SendTaskFailureRequest{a.token, a.error, a.cause}),
                  CompletionJson);
  }
  if (chosen("task", "heartbeat")) return Answer(client.SendTaskHeartbeat(a.token), EmptyJson);
  if (chosen("task", "cancel")) return Answer(client.CancelTask(a.token), CompletionJson);
  if (chosen("task", "describe")) return Answer(client.DescribeTask(a.token), DescriptionJson);
  if (chosen("events", "watch")) return WatchEvents(client, a);
  if (chosen("events", "ack")) {
    return Answer(client.AckEvents(a.consumer, a.from_seq), EmptyJson);
  }
  if (chosen("events", "delete-consumer")) {
    return Answer(client.DeleteConsumer(a.consumer), EmptyJson);
  }
  if (app.get_subcommand("backup")->parsed()) {
    return Answer(client.Checkpoint(a.name_or_arn), [](const std::string& dir) {
      return json{{"directory", dir}};
    });
  }
  return UsageError("no command; see --help");
}

constexpr char kPayloadKeyFileHeader[] =
    "# tokenwheel payload keys (tokenwheeld --payload-key-file). SECRET: whoever has this file\n"
    "# reads every task payload; losing it loses them. Back it up apart from the data.\n"
    "# One key per line: v1 <key id 0..255> <64 hex digits>. The last key encrypts; all decrypt.\n"
    "# To rotate: tokenwheel keygen --payload-key-file THIS_FILE, then restart tokenwheeld.\n";

// `tokenwheel keygen`: local, no server. Adds a fresh key as the file's last line (creating the
// file with mode 0600), so that it encrypts from tokenwheeld's next start on.
int Keygen(const Args& a) {
  uint8_t id = 0;
  tw::Status s = tw::keyfile::AddKey(a.payload_key_file, "payload key file", kPayloadKeyFileHeader,
                                     a.key_id, &id);
  if (!s.ok()) {
    Print(json{{"error", "KeygenFailed"}, {"message", s.ToString()}});
    return 1;
  }
  Print(json{{"payloadKeyFile", a.payload_key_file}, {"keyId", id}});
  return 0;
}

// A value option (T: std::string or std::optional<std::string>): the value itself, file://PATH
// or -, which ReadValues replaces after parsing.
template <typename T>
CLI::Option* AddValueOption(CLI::App* app, const std::string& name, T& target,
                            const std::string& description) {
  return app->add_option(name, target, description + kValueHelp);
}

// The environment's value of `name`, or "".
std::string Env(const char* name) {
  const char* value = std::getenv(name);
  return value != nullptr ? value : "";
}

void DefineCommands(CLI::App& app, Args& a) {
  const char* env = std::getenv("TOKENWHEEL_SERVER");
  a.server = env != nullptr && *env != '\0' ? env : "127.0.0.1:7411";
  app.add_option("--server", a.server, "HOST:PORT of tokenwheeld (env TOKENWHEEL_SERVER)")
      ->capture_default_str();
  a.auth_file = Env("TOKENWHEEL_AUTH_FILE");
  a.tls_ca = Env("TOKENWHEEL_TLS_CA");
  a.tls_cert = Env("TOKENWHEEL_TLS_CERT");
  a.tls_key = Env("TOKENWHEEL_TLS_KEY");
  a.tls_server_name = Env("TOKENWHEEL_TLS_SERVER_NAME");
  app.add_option("--auth-file", a.auth_file,
                 "File holding the server's bearer secret (its --rpc-auth-file format, mode 0600; "
                 "the first secret is sent) (env TOKENWHEEL_AUTH_FILE)");
  app.add_flag("--tls", a.tls,
               "Speak TLS, trusting the system's CAs (implied by any --tls-* file option)");
  app.add_option("--tls-ca", a.tls_ca,
                 "PEM CA certificate(s) the server's certificate must chain to; implies TLS "
                 "(env TOKENWHEEL_TLS_CA)");
  app.add_option("--tls-cert", a.tls_cert,
                 "PEM client certificate, for a server with --rpc-tls-client-ca (env "
                 "TOKENWHEEL_TLS_CERT)");
  app.add_option("--tls-key", a.tls_key,
                 "PEM private key of --tls-cert, mode 0600 (env TOKENWHEEL_TLS_KEY)");
  app.add_option("--tls-server-name", a.tls_server_name,
                 "Name the server's certificate must carry (also sent as SNI); default: the host "
                 "of --server (env TOKENWHEEL_TLS_SERVER_NAME)");
  app.require_subcommand(1);

  CLI::App* ping = app.add_subcommand("ping", "Round trip to the server, no engine work");
  ping->add_option("payload", a.payload, "Bytes to echo");
  app.add_subcommand("stats",
                     "Live tasks, queued per activity, pending timers, events not acked, ...");
  app.add_subcommand("backup",
                     "Online backup into the server's --backup-dir/NAME -> directory; start "
                     "tokenwheeld with --data-dir on (a copy of) it to restore")
      ->add_option("NAME", a.name_or_arn, "A new directory's name: A-Z a-z 0-9 . _ -")
      ->required();

  CLI::App* keygen = app.add_subcommand(
      "keygen",
      "Local, no server: add a fresh random AES-256 key as the last line of a payload key file "
      "(created with mode 0600 if missing); tokenwheeld encrypts with it from its next start "
      "(--payload-key-file) -> payloadKeyFile, keyId");
  keygen->add_option("--payload-key-file", a.payload_key_file, "The payload key file")->required();
  tw::cli::AddDecimalOption(keygen, "--key-id", a.key_id,
                            "Key id 0..255 (default: the largest listed + 1, or 1)")
      ->check(CLI::Range(0, 255));

  CLI::App* act = app.add_subcommand("activity", "Activities: named queues of work");
  act->require_subcommand(1);
  act->add_subcommand("create", "Create (idempotently by name) -> activityArn, creationDate")
      ->add_option("NAME", a.name_or_arn, "Activity name")
      ->required();
  act->add_subcommand("delete", "Delete; its queued tasks end FAILED")
      ->add_option("ARN", a.name_or_arn, "Activity ARN")
      ->required();
  act->add_subcommand("describe", "-> activityArn, name, creationDate")
      ->add_option("ARN", a.name_or_arn, "Activity ARN")
      ->required();
  CLI::App* list = act->add_subcommand("list", "-> activities, nextToken");
  tw::cli::AddDecimalOption(list, "--max-results", a.max_results, "0..1000, 0 means 100");
  list->add_option("--next-token", a.next_token, "From the previous page");

  CLI::App* task = app.add_subcommand("task", "Tasks and their tokens");
  task->require_subcommand(1);
  CLI::App* issue = task->add_subcommand("issue", "Issue a task -> taskToken");
  issue->add_flag("--callback", a.callback, "A callback task: born started, clocks run now");
  issue->add_option("--activity", a.activity, "Queue an activity task on ARN");
  AddValueOption(issue, "--input", a.input, "Task input, JSON")->capture_default_str();
  tw::cli::AddDecimalOption(issue, "--timeout", a.timeout_s, "Overall timeout, seconds (0 = none)");
  tw::cli::AddDecimalOption(issue, "--heartbeat", a.heartbeat_s,
                            "Heartbeat timeout, seconds (0 = none)");
  tw::cli::AddDecimalOption(issue, "--schedule-to-start", a.schedule_to_start_s,
                            "Max seconds queued before a worker takes it (0 = none)");
  issue->add_option("--key", a.key, "Idempotency key: same key, same token");
  issue->add_option("--correlation", a.correlation, "Opaque bytes returned in the outcome event");
  CLI::App* poll = task->add_subcommand("poll", "Long-poll an activity -> taskToken, input, or {}");
  poll->add_option("ARN", a.name_or_arn, "Activity ARN")->required();
  poll->add_option("--worker", a.worker, "Worker name");
  tw::cli::AddDecimalOption(poll, "--wait", a.wait_s,
                            "Wait at most S seconds (0 = the server's maximum)");
  CLI::App* succeed = task->add_subcommand("succeed", "Report success");
  succeed->add_option("TOKEN", a.token, "Task token")->required();
  AddValueOption(succeed, "--output", a.output, "Output, JSON")->required();
  CLI::App* fail = task->add_subcommand("fail", "Report failure");
  fail->add_option("TOKEN", a.token, "Task token")->required();
  AddValueOption(fail, "--error", a.error, "Error name (<= 256 chars)");
  AddValueOption(fail, "--cause", a.cause, "Cause (<= 32,768 chars)");
  task->add_subcommand("heartbeat", "Reset the heartbeat clock")
      ->add_option("TOKEN", a.token, "Task token")
      ->required();
  task->add_subcommand("cancel", "Cancel a live task")
      ->add_option("TOKEN", a.token, "Task token")
      ->required();
  task->add_subcommand("describe", "State, timeout reason, times, output / error / cause, worker")
      ->add_option("TOKEN", a.token, "Task token")
      ->required();

  CLI::App* events = app.add_subcommand("events", "The outcome stream");
  events->require_subcommand(1);
  CLI::App* watch = events->add_subcommand(
      "watch", "One JSON line per outcome event, acknowledging as it prints");
  watch->add_option("--consumer", a.consumer, "Consumer name (its cursor is durable)")->required();
  tw::cli::AddDecimalOption(watch, "--from", a.from_seq,
                            "First sequence (0 = after the consumer's cursor)");
  tw::cli::AddDecimalOption(watch, "--count", a.count,
                            "Exit after this many events (0 = run until killed)");
  watch->add_flag("--no-ack", a.no_ack, "Do not acknowledge");
  CLI::App* ack = events->add_subcommand("ack", "Acknowledge every event <= SEQ");
  ack->add_option("--consumer", a.consumer, "Consumer name")->required();
  tw::cli::AddDecimalOption(ack, "SEQ", a.from_seq, "Sequence")->required();
  events->add_subcommand("delete-consumer", "Forget a consumer")
      ->add_option("--consumer", a.consumer, "Consumer name")
      ->required();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "tokenwheel: command-line client of tokenwheeld. Prints JSON on stdout; errors as "
      "{\"error\": CODE, \"message\": TEXT}; exit 2 for a typed error, 1 for "
      "connection or usage trouble. --input, --output, --error, --cause also take file://PATH "
      "(a file) or - (stdin); integers are decimal."};
  Args a;
  DefineCommands(app, a);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    return UsageError(e.what());
  }
  if (app.get_subcommand("keygen")->parsed()) return Keygen(a);
  const std::string unreadable = ReadValues(a);
  if (!unreadable.empty()) return UsageError(unreadable);
  tw::rpc::ClientOptions options;
  if (!a.auth_file.empty()) {
    auto secrets = tw::rpc::LoadAuthSecrets(a.auth_file);
    if (!secrets.ok()) return UsageError("--auth-file: " + secrets.error.message);
    options.auth_secret = secrets.value.front();
    for (std::string& s : secrets.value) tw::rpc::WipeSecret(&s);
  }
  options.tls = a.tls;
  options.tls_ca_file = a.tls_ca;
  options.tls_cert_file = a.tls_cert;
  options.tls_key_file = a.tls_key;
  options.tls_server_name = a.tls_server_name;
  auto connected = Client::Connect(a.server, options);
  tw::rpc::WipeSecret(&options.auth_secret);
  if (!connected.ok()) {
    if (!tw::rpc::IsTransportError(connected.error)) return UsageError(connected.error.message);
    return PrintError(connected.error);
  }
  return Dispatch(app, *connected.value, a);
}
