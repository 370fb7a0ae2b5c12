// What the libFuzzer targets of tests/fuzz share: the token key every target and seed corpus
// uses (so that the tokens in the corpora decode and reach the engine), a check that traps, and
// an engine on a MemoryStore for the targets that go through a front end. Header-only: each
// target is one translation unit plus this.
#pragma once

#include <openssl/crypto.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <array>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/clock.h"
#include "engine/engine.h"
#include "engine/token.h"
#include "storage/memory_store.h"

// A property the target checks: when it does not hold, say which and trap, so that libFuzzer
// saves the input as a crash. (A TW_ASSERT inside the product aborts, which libFuzzer also
// reports.)
#define TW_FUZZ_CHECK(cond)                                                               \
  do {                                                                                    \
    if (!(cond)) {                                                                        \
      std::fprintf(stderr, "fuzz check failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__); \
      __builtin_trap();                                                                   \
    }                                                                                     \
  } while (0)

namespace tw::fuzz {

// Whether TW_FUZZ_VERBOSE is set: a target then prints what it saw to stderr, for running one
// input by hand (./tw_fuzz_gateway corpus/gateway/seed-stats).
inline bool Verbose() {
  static const bool verbose = std::getenv("TW_FUZZ_VERBOSE") != nullptr;
  return verbose;
}

// Token key id 1 of every fuzzed engine and codec. tests/fuzz/make_seeds.py signs the corpora's
// tokens with the same bytes: byte i is 7 * i + 3.
inline constexpr uint8_t kTokenKeyId = 1;
inline std::array<uint8_t, TokenCodec::kKeyBytes> TokenKey() {
  std::array<uint8_t, TokenCodec::kKeyBytes> key{};
  for (size_t i = 0; i < key.size(); ++i) key[i] = static_cast<uint8_t>(7 * i + 3);
  return key;
}

// The key file of EngineOptions::token_key_file holding TokenKey() (token.h has the format).
inline std::string TokenKeyFileText() {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string text = "v1 " + std::to_string(kTokenKeyId) + " ";
  for (const uint8_t b : TokenKey()) {
    text.push_back(kDigits[b >> 4]);
    text.push_back(kDigits[b & 15]);
  }
  return text + "\n";
}

// The time every fuzzed engine and gateway starts at: the X-Amz-Date of the signed seeds
// (20231114T221320Z) is within the allowed skew of it.
inline constexpr int64_t kStartMs = 1'700'000'000'000;

// libFuzzer defaults that do not fit a target keeping an engine (and its threads) between
// inputs. Such a target makes these its defaults from LLVMFuzzerInitialize; the same flags on the
// command line still win (they come later).
//  -detect_leaks=0: the per-input leak check runs LeakSanitizer over the whole heap whenever an
//      input leaves more allocations than it found, which every input does here (the engine's
//      state grows): it found nothing and took most of the time. LeakSanitizer still checks the
//      whole process at exit, once the target has torn its engine down (AtExitBeforeOpenSsl).
//  -entropic=0: the entropic schedule's per-input bookkeeping of feature frequencies grows with
//      the features an input reaches, and the engine's and front end's threads add thousands:
//      it was 61% of tw_fuzz_capnp's time (perf), 170 inputs/s against 900 without it.
inline void StatefulTargetFlags(int* argc, char*** argv) {
  static char leaks[] = "-detect_leaks=0";
  static char entropic[] = "-entropic=0";
  static std::vector<char*> args;
  args.assign(*argv, *argv + *argc);
  args.insert(args.begin() + 1, {leaks, entropic});
  args.push_back(nullptr);
  *argc = static_cast<int>(args.size()) - 1;
  *argv = args.data();
}

// Runs `tear_down` at exit before OpenSSL's own exit handler, which must come after it: that
// handler forgets OpenSSL's per-thread state, so the engine and gateway threads that `tear_down`
// joins would leak theirs (LeakSanitizer reports it). Exit handlers run in the reverse order of
// their registration, and OpenSSL registers its handler when first initialized; hence that
// first, here.
inline void AtExitBeforeOpenSsl(void (*tear_down)()) {
  TW_FUZZ_CHECK(OPENSSL_init_crypto(OPENSSL_INIT_LOAD_CONFIG, nullptr) == 1);
  TW_FUZZ_CHECK(std::atexit(tear_down) == 0);
}

// The one Stack a stateful target keeps across inputs: made at the first input, torn down at
// exit (AtExitBeforeOpenSsl).
template <typename Stack>
Stack& TheStack() {
  static Stack* stack = nullptr;
  if (stack == nullptr) {
    AtExitBeforeOpenSsl([] {
      delete stack;
      stack = nullptr;
    });
    stack = new Stack();
  }
  return *stack;
}

// An engine on a MemoryStore with the key above, in a temporary directory of its own. A target
// keeps one for many inputs (opening one costs threads and a directory) and calls Reopen()
// every so often, which bounds the state that inputs pile up.
class FuzzEngine {
 public:
  FuzzEngine() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "tw-fuzz-XXXXXX").string();
    TW_FUZZ_CHECK(::mkdtemp(tmpl.data()) != nullptr);
    dir_ = tmpl;
    std::ofstream(dir_ + "/token.key") << TokenKeyFileText();
    ::chmod((dir_ + "/token.key").c_str(), 0600);
    Reopen();
  }
  ~FuzzEngine() {
    Close();
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }
  FuzzEngine(const FuzzEngine&) = delete;
  FuzzEngine& operator=(const FuzzEngine&) = delete;

  Engine* engine() { return engine_.get(); }
  ManualClock& clock() { return clock_; }

  // Stops the engine (waiting polls are answered empty) and opens a new one on a fresh disk.
  void Reopen() {
    Close();
    EngineOptions options;
    options.token_key_file = dir_ + "/token.key";
    // One engine thread, no writer thread: fewer hand-offs per call, so more inputs a second.
    options.commit = CommitMode::kInline;
    disk_ = std::make_shared<MemoryDisk>();
    auto opened = Engine::Open(options, std::make_unique<MemoryStore>(disk_), &clock_);
    if (!opened.ok()) std::fprintf(stderr, "fuzz: engine: %s\n", opened.error.message.c_str());
    TW_FUZZ_CHECK(opened.ok());
    engine_ = std::move(opened.value);
  }

  void Close() {
    if (engine_ != nullptr) engine_->Stop();
    engine_.reset();
  }

 private:
  std::string dir_;
  ManualClock clock_{kStartMs};
  std::shared_ptr<MemoryDisk> disk_;
  std::unique_ptr<Engine> engine_;
};

}  // namespace tw::fuzz
