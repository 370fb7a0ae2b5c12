// Fuzz target: the Cap'n Proto request handlers (rpc/service.h) in process, over a real Engine
// on a MemoryStore: calls built from the schema (rpc/tokenwheel.capnp, through capnp's dynamic
// API) and made on the TokenWheel service as a connection's calls, on this thread's KJ loop,
// with the engine's answers coming back through the mailbox as in the server.
//
// Input: a program, read front to back (ByteReader; bytes past the end read as 0). Each step:
//   method  byte % (methods + 1): a TokenWheel method in schema order, or past them "advance
//           the engine's clock" (then a byte picks how far) and wait until its timers fired;
//   flags   bit 0: wait for the answer now (its tokens and ARNs can feed later calls); else the
//           call stays in flight;
//   params  every field of the method's params, in schema order (see Fill): numbers from the
//           bytes, Text and Data null, bytes, a token / ARN / name an answer of this input
//           returned, or a dictionary word; lists of 0..4 items (or kRpcBatchItemsMax + 1, or
//           up to 16); an EventSink capability served here.
// At the end every call in flight but the long polls is waited for; then the "connection" goes:
// its service, long polls and subscriptions are dropped (cancelled), as when a peer hangs up.
//
// Checked: no abort, no sanitizer report, every call answers (no hang), and no call fails with
// an internal error (the engine's kInternal: a bug by definition). Typed errors and OVERLOADED /
// FAILED exceptions for malformed requests are answers. tests/fuzz/make_seeds.py writes seeds
// in this format.
//
// Engine state carries over between inputs; every kInputsPerEngine inputs it is replaced.
#include <capnp/dynamic.h>
#include <capnp/schema.h>
#include <kj/async-io.h>
#include <kj/debug.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "engine/limits.h"
#include "rpc/call_counts.h"
#include "rpc/connection_load.h"
#include "rpc/mailbox.h"
#include "rpc/server_core.h"
#include "rpc/service.h"
#include "rpc/tokenwheel.capnp.h"
#include "tests/fuzz/fuzz_support.h"

namespace tw::fuzz {
namespace {

using capnp::DynamicStruct;
using capnp::DynamicValue;
using Which = capnp::schema::Type::Which;

constexpr size_t kInputsPerEngine = 5'000;
constexpr size_t kStepsMax = 64;
constexpr size_t kDepthMax = 3;        // the params nest 2 deep
constexpr size_t kRememberedMax = 16;  // strings kept per pool
constexpr size_t kLongListItems = limits::kRpcBatchItemsMax + 1;

// ---- Reading the program ----

class ByteReader {
 public:
  ByteReader(const uint8_t* data, size_t size) : p_(data), end_(data + size) {}
  bool done() const { return p_ == end_; }
  uint8_t Byte() { return p_ == end_ ? 0 : *p_++; }
  uint64_t Bytes(size_t n) {  // big-endian
    uint64_t v = 0;
    for (size_t i = 0; i < n; ++i) v = v << 8 | Byte();
    return v;
  }
  std::string String(size_t n) {
    n = std::min<size_t>(n, static_cast<size_t>(end_ - p_));
    std::string s(reinterpret_cast<const char*>(p_), n);
    p_ += n;
    return s;
  }

 private:
  const uint8_t* p_;
  const uint8_t* const end_;
};

// Strings answers returned, for later calls: tokens, ARNs, everything else.
struct Pools {
  std::vector<std::string> tokens;
  std::vector<std::string> arns;
  std::vector<std::string> words;

  std::vector<std::string>& For(std::string_view field) {
    if (field.find("oken") != std::string_view::npos) return tokens;
    if (field.find("rn") != std::string_view::npos) return arns;
    return words;
  }
  void Remember(std::string_view field, std::string value) {
    std::vector<std::string>& pool = For(field);
    if (pool.size() == kRememberedMax) pool.erase(pool.begin());
    pool.push_back(std::move(value));
  }
};

// A well-formed token signed with the engine's key, of a task that never existed.
std::string TokenOfNoTask() {
  static const TokenCodec codec({{kTokenKeyId, TokenKey()}});
  return codec.Encode(0, TaskId{1, 2});
}

const std::vector<std::string>& Dictionary() {
  static const std::vector<std::string> words = {
      "",
      "{}",
      R"({"a":[1,2.5,{"b":null}],"c":"\u00e9"})",
      "not json",
      "arn:aws:states:us-east-1:000000000000:activity:fuzz",
      "arn:aws:states:us-east-1:000000000000:activity:",
      "fuzz",
      "consumer-1",
      "States.Timeout",
      "\xff\xfe",
      std::string(300, 'n'),
      TokenOfNoTask(),
  };
  return words;
}

// An EventSink that takes every event: subscriptions need one to deliver to.
class Sink final : public proto::EventSink::Server {
 protected:
  kj::Promise<void> events(EventsContext context) override {
    (void)context.getParams().getEvents().size();
    return kj::READY_NOW;
  }
  kj::Promise<void> ended(EndedContext) override { return kj::READY_NOW; }
};

// ---- The stack: KJ loop, mailbox, server core, engine ----

class Stack {
 public:
  Stack() : io_(kj::setupAsyncIo()) { Open(); }
  ~Stack() { Close(); }

  kj::WaitScope& ws() { return io_.waitScope; }
  rpc::ServerCore& core() { return *core_; }
  FuzzEngine& engine() { return engine_; }

  // Called once per input: every kInputsPerEngine inputs, a fresh engine and core.
  void Count() {
    if (++inputs_ % kInputsPerEngine != 0) return;
    Close();
    engine_.Reopen();
    Open();
  }

 private:
  // The server's wiring (rpc/server.cc): the engine's event notices and answers come through
  // the mailbox, which this thread's loop pumps.
  void Open() {
    rpc::ServerOptions options;
    options.max_poll_seconds = 1;
    mailbox_ = std::make_shared<rpc::Mailbox>();
    core_ = std::make_unique<rpc::ServerCore>(engine_.engine(), options, io_.provider->getTimer(),
                                              mailbox_, std::make_shared<rpc::CallCounts>());
    std::shared_ptr<rpc::Mailbox> mailbox = mailbox_;
    rpc::ServerCore* core = core_.get();
    engine_.engine()->AddEventListener(
        [mailbox, core](uint64_t) { mailbox->Post([core]() { core->OnEvents(); }); });
    pump_ = mailbox_->Run(*io_.lowLevelProvider).eagerlyEvaluate(nullptr);
  }

  // The engine stops (answering what it holds), its answers are delivered, then the core goes.
  void Close() {
    core_->Uncork();
    engine_.Close();
    for (int i = 0; i < 1000 && !core_->Idle(); ++i) ws().poll();
    TW_FUZZ_CHECK(core_->Idle());
    pump_ = nullptr;
    mailbox_->Close();
    core_.reset();
  }

  FuzzEngine engine_;
  kj::AsyncIoContext io_;
  std::shared_ptr<rpc::Mailbox> mailbox_;
  std::unique_ptr<rpc::ServerCore> core_;
  kj::Promise<void> pump_ = nullptr;
  size_t inputs_ = 0;
};

// ---- One input: a connection's calls ----

class Program {
 public:
  Program(Stack& stack, ByteReader& in)
      : stack_(stack),
        in_(in),
        load_(kj::refcounted<rpc::ConnectionLoad>()),
        service_(rpc::NewTokenWheelService(stack.core(), kj::addRef(*load_))
                     .castAs<capnp::DynamicCapability>(Schema())) {}

  void Run() {
    for (size_t step = 0; step < kStepsMax && !in_.done(); ++step) Step();
    for (Pending& p : pending_) {
      if (!p.poll) p.answer.wait(stack_.ws());
    }
    stack_.ws().poll();  // answers that are ready, a poll's included
  }

 private:
  struct Pending {
    bool poll;
    kj::Promise<void> answer;
  };

  static capnp::InterfaceSchema Schema() { return capnp::Schema::from<proto::TokenWheel>(); }

  void Step() {
    const auto methods = Schema().getMethods();
    const size_t pick = in_.Byte() % (methods.size() + 1);
    const bool wait = (in_.Byte() & 1) != 0;
    if (pick == methods.size()) return AdvanceClock();
    auto method = methods[static_cast<unsigned>(pick)];
    auto request = service_.newRequest(method);
    Fill(request, 0);
    if (Verbose()) {
      std::fprintf(stderr, "%s%s\n", method.getProto().getName().cStr(),
                   kj::str(request.asReader()).cStr());
    }
    kj::Promise<void> answer = request.send()
                                   .then(
                                       [this](capnp::Response<DynamicStruct>&& r) {
                                         if (Verbose())
                                           std::fprintf(stderr, "  -> %s\n", kj::str(r).cStr());
                                         Harvest(r, 0);
                                       },
                                       [](kj::Exception&& e) { CheckException(e); })
                                   .eagerlyEvaluate(nullptr);
    const bool poll = method.getProto().getName() == "getActivityTask";
    if (wait && !poll) return answer.wait(stack_.ws());
    pending_.push_back(Pending{poll, kj::mv(answer)});
  }

  // Moves the engine's clock, then waits until every timer due by then has fired (Engine::Sync).
  void AdvanceClock() {
    static constexpr std::array<int64_t, 8> kSteps = {1,      999,       1'000,      5'000,
                                                      61'000, 3'600'000, 86'400'000, 0};
    const uint8_t b = in_.Byte();
    const int64_t ms = kSteps[b % kSteps.size()] + (b >> 3) * 250;
    stack_.engine().clock().Advance(ms);
    if (Verbose()) std::fprintf(stderr, "advance clock %lld ms\n", static_cast<long long>(ms));
    Engine* engine = stack_.engine().engine();
    auto synced = stack_.core().Call<Empty>(
        [engine](Callback<Empty> cb) { engine->Sync(std::move(cb)); }, rpc::Admission::kAlways);
    TW_FUZZ_CHECK(synced.wait(stack_.ws()).ok());
  }

  // ---- Params ----

  void Fill(DynamicStruct::Builder s, size_t depth) {
    for (auto field : s.getSchema().getFields()) FillField(s, field, depth);
  }

  void FillField(DynamicStruct::Builder s, capnp::StructSchema::Field field, size_t depth) {
    const capnp::Type type = field.getType();
    const std::string_view name = field.getProto().getName().cStr();
    switch (type.which()) {
      case Which::STRUCT:
        if ((in_.Byte() & 1) != 0 && depth < kDepthMax) {
          Fill(s.init(field).as<DynamicStruct>(), depth + 1);
        }
        return;
      case Which::LIST:
        return FillList(s, field, depth);
      case Which::INTERFACE:
        if ((in_.Byte() & 1) != 0) s.set(field, SinkOf(type));
        return;
      default:
        return Value(type, name, [&](const DynamicValue::Reader& v) { s.set(field, v); });
    }
  }

  void FillList(DynamicStruct::Builder s, capnp::StructSchema::Field field, size_t depth) {
    const uint8_t kind = in_.Byte() % 8;
    if (kind == 0) return;  // null
    const size_t n = kind <= 5 ? kind - 1 : kind == 6 ? kLongListItems : in_.Byte() % 17;
    auto list = s.init(field, static_cast<unsigned>(n)).as<capnp::DynamicList>();
    const capnp::Type element = field.getType().asList().getElementType();
    const std::string_view name = field.getProto().getName().cStr();
    for (unsigned i = 0; i < list.size(); ++i) {
      if (element.isStruct()) {
        if (depth < kDepthMax) Fill(list[i].as<DynamicStruct>(), depth + 1);
      } else if (!element.isList() && !element.isInterface()) {
        Value(element, name, [&](const DynamicValue::Reader& v) { list.set(i, v); });
      }
    }
  }

  DynamicValue::Reader SinkOf(capnp::Type type) {
    proto::EventSink::Client sink = kj::heap<Sink>();
    return sink.castAs<capnp::DynamicCapability>(type.asInterface());
  }

  // A scalar, Text or Data value for a field named `name`, handed to `set` (the strings live
  // only as long as that call). A null Text or Data is left unset.
  template <typename Set>
  void Value(capnp::Type type, std::string_view name, Set set) {
    switch (type.which()) {
      case Which::BOOL:
        return set((in_.Byte() & 1) != 0);
      case Which::INT8:
        return set(static_cast<int8_t>(Number(1)));
      case Which::INT16:
        return set(static_cast<int16_t>(Number(2)));
      case Which::INT32:
        return set(static_cast<int32_t>(Number(4)));
      case Which::INT64:
        return set(static_cast<int64_t>(Number(8)));
      case Which::UINT8:
        return set(static_cast<uint8_t>(Number(1)));
      case Which::UINT16:
        return set(static_cast<uint16_t>(Number(2)));
      case Which::UINT32:
        return set(static_cast<uint32_t>(Number(4)));
      case Which::UINT64:
        return set(Number(8));
      case Which::ENUM:
        return set(capnp::DynamicEnum(type.asEnum(), in_.Byte()));
      case Which::TEXT:
      case Which::DATA: {
        std::optional<std::string> s = String(name);
        if (!s) return;
        if (type.which() == Which::TEXT) return set(capnp::Text::Reader(s->c_str(), s->size()));
        return set(capnp::Data::Reader(reinterpret_cast<const kj::byte*>(s->data()), s->size()));
      }
      default:
        return;  // floats, AnyPointer: none in the params
    }
  }

  // Numbers, mostly small (the interesting seconds and counts are), sometimes all ones.
  uint64_t Number(size_t width) {
    switch (in_.Byte() % 4) {
      case 0:
        return 0;
      case 1:
        return in_.Byte();
      case 2:
        return width == 8 ? std::numeric_limits<uint64_t>::max() : (uint64_t{1} << (8 * width)) - 1;
      default:
        return in_.Bytes(width);
    }
  }

  std::optional<std::string> String(std::string_view field) {
    switch (in_.Byte() % 4) {
      case 0:
        return std::nullopt;
      case 1:
        return in_.String(in_.Byte());
      case 2: {
        const std::vector<std::string>& pool = pools_.For(field);
        const uint8_t i = in_.Byte();
        if (pool.empty()) return std::string();
        return pool[i % pool.size()];
      }
      default:
        return Dictionary()[in_.Byte() % Dictionary().size()];
    }
  }

  // ---- Answers ----

  // Keeps the tokens, ARNs and names an answer holds, and its capabilities (a subscription
  // lives while held).
  void Harvest(DynamicStruct::Reader s, size_t depth) {
    if (depth > kDepthMax) return;
    for (auto field : s.getSchema().getNonUnionFields()) Visit(s, field, depth);
    KJ_IF_MAYBE (field, s.which()) {
      Visit(s, *field, depth);
    }
  }

  void Visit(DynamicStruct::Reader s, capnp::StructSchema::Field field, size_t depth) {
    const capnp::Type type = field.getType();
    const std::string_view name = field.getProto().getName().cStr();
    if (type.isText() && s.has(field)) {
      const capnp::Text::Reader t = s.get(field).as<capnp::Text>();
      if (t.size() > 0) pools_.Remember(name, std::string(t.cStr(), t.size()));
    } else if (type.isStruct()) {
      Harvest(s.get(field).as<DynamicStruct>(), depth + 1);
    } else if (type.isList() && type.asList().getElementType().isStruct()) {
      for (auto item : s.get(field).as<capnp::DynamicList>()) {
        Harvest(item.as<DynamicStruct>(), depth + 1);
      }
    } else if (type.isInterface() && s.has(field)) {
      held_.push_back(s.get(field).as<capnp::DynamicCapability>());
    }
  }

  static void CheckException(const kj::Exception& e) {
    const std::string_view what = e.getDescription().cStr();
    if (Verbose()) std::fprintf(stderr, "  -> exception: %s\n", what.data());
    if (what.find("InternalFailure") != std::string_view::npos) {
      std::fprintf(stderr, "fuzz: internal error: %s\n", what.data());
    }
    TW_FUZZ_CHECK(what.find("InternalFailure") == std::string_view::npos);
  }

  Stack& stack_;
  ByteReader& in_;
  kj::Own<rpc::ConnectionLoad> load_;
  capnp::DynamicCapability::Client service_;
  Pools pools_;
  std::vector<Pending> pending_;
  std::vector<capnp::DynamicCapability::Client> held_;
};

}  // namespace
}  // namespace tw::fuzz

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  tw::fuzz::StatefulTargetFlags(argc, argv);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace tw::fuzz;
  Stack& stack = TheStack<Stack>();
  {
    ByteReader in(data, size);
    Program program(stack, in);
    program.Run();
  }
  stack.ws().poll();  // the dropped calls, polls and subscriptions unwind
  stack.Count();
  return 0;
}
