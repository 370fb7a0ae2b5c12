// The engine a front-end benchmark runs behind its server (tw_bench_rpc, tw_bench_gateway): a
// RocksDB store in a fresh directory under $TW_BENCH_DIR (else the temp dir); durability sync
// unless TW_BENCH_DURABILITY=none; EngineOptions::commit as tokenwheeld's default unless
// TW_BENCH_COMMIT names another. Header-only.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <random>
#include <string>

#include "engine/clock.h"
#include "engine/engine.h"
#include "storage/rocksdb_store.h"

namespace tw::bench {

struct BenchEngine {
  std::string dir;
  bool sync = true;
  CommitMode commit = EngineOptions().commit;
  std::unique_ptr<Engine> engine;
};

// Opens it, naming the directory after `name`; false (with a line on stderr) on failure.
inline bool OpenBenchEngine(const std::string& name, Clock* clock, BenchEngine* out) {
  std::random_device rd;
  const char* base = std::getenv("TW_BENCH_DIR");
  out->dir =
      ((base != nullptr ? std::filesystem::path(base) : std::filesystem::temp_directory_path()) /
       (name + "-" + std::to_string(rd())))
          .string();
  std::filesystem::create_directories(out->dir);
  const char* durability = std::getenv("TW_BENCH_DURABILITY");
  out->sync = durability == nullptr || std::string(durability) != "none";
  RocksStoreOptions store_options;
  store_options.path = out->dir + "/db";
  store_options.sync_default = out->sync;
  std::unique_ptr<Store> store;
  Status s = OpenRocksStore(store_options, &store);
  if (!s.ok()) {
    std::fprintf(stderr, "store: %s\n", s.ToString().c_str());
    return false;
  }
  EngineOptions engine_options;
  engine_options.durability = out->sync ? Durability::kSync : Durability::kNone;
  const char* commit = std::getenv("TW_BENCH_COMMIT");
  if (commit != nullptr && !ParseCommitMode(commit, &engine_options.commit)) {
    std::fprintf(stderr, "TW_BENCH_COMMIT must be adaptive, inline or pipelined\n");
    return false;
  }
  out->commit = engine_options.commit;
  engine_options.token_key_file = out->dir + "/token.key";
  auto engine = Engine::Open(engine_options, std::move(store), clock);
  if (!engine.ok()) {
    std::fprintf(stderr, "engine: %s\n", engine.error.message.c_str());
    return false;
  }
  out->engine = std::move(engine.value);
  return true;
}

}  // namespace tw::bench
