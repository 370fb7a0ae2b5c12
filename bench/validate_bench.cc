// Payload validation (every task input and success output, on the caller's thread): the JSON
// scanner (engine/json_scan.h) against nlohmann/json's SAX parser answering the same question
// (`json::accept`), and ValidateOutput as a whole (size, UTF-8, JSON). Pairs share a payload:
//
//   small   the engine benchmark's success output (~55 bytes, one flat object)
//   doc     a 4 KiB document: nested objects and arrays, numbers, escapes, non-ASCII text
//   large   ~256 KiB (the payload limit): an array of such documents
//
// Counters: bytes_per_second and items_per_second (payloads per second).
// Run: build/release/bench/tw_bench_validate   (or `make bench`)
#include <benchmark/benchmark.h>

#include <nlohmann/json.hpp>
#include <string>

#include "engine/json_scan.h"
#include "engine/limits.h"
#include "engine/validate.h"

namespace tw {
namespace {

std::string Doc() {
  std::string s = R"({"order":{"id":"A-1234567","lines":[)";
  for (int i = 0; i < 24; ++i) {
    if (i > 0) s += ',';
    s += R"({"sku":"SKU-)" + std::to_string(1000 + i) + R"(","qty":)" + std::to_string(i % 7 + 1) +
         R"(,"price":)" + std::to_string(i * 3) +
         R"(.99,"note":"caf\u00e9 \"fragile\" \u2014 keep upright","tags":["a","b",null,true]})";
  }
  s += R"(]},"customer":{"name":"Zoë Müller","email":"zoe@example.com","since":1.7e9}})";
  while (s.size() < 4096) s += ' ';
  return s;
}

std::string Payload(const std::string& which) {
  if (which == "small") return R"({"status":"shipped","tracking":"1Z999AA10123456784"})";
  if (which == "doc") return Doc();
  std::string s = "[";
  const std::string doc = Doc();
  while (s.size() + doc.size() + 2 < limits::kPayloadBytesMax) {
    if (s.size() > 1) s += ',';
    s += doc;
  }
  return s + "]";
}

template <typename Fn>
void Run(benchmark::State& state, const std::string& which, Fn&& valid) {
  const std::string payload = Payload(which);
  if (!valid(payload)) state.SkipWithError("payload refused");
  for (auto _ : state) {
    bool ok = valid(payload);
    benchmark::DoNotOptimize(ok);
  }
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * payload.size()));
}

void RegisterAll() {
  for (const char* which : {"small", "doc", "large"}) {
    const std::string w = which;
    benchmark::RegisterBenchmark(("JsonScan/" + w).c_str(), [w](benchmark::State& s) {
      Run(s, w, [](const std::string& p) { return IsJsonValue(p); });
    });
    benchmark::RegisterBenchmark(("NlohmannAccept/" + w).c_str(), [w](benchmark::State& s) {
      Run(s, w, [](const std::string& p) { return nlohmann::json::accept(p); });
    });
    benchmark::RegisterBenchmark(("ValidateOutput/" + w).c_str(), [w](benchmark::State& s) {
      Run(s, w, [](const std::string& p) { return ValidateOutput(p).code == ErrorCode::kOk; });
    });
  }
}

}  // namespace
}  // namespace tw

int main(int argc, char** argv) {
  tw::RegisterAll();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
