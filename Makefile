# The front door. `make test` is the one test command; `.ci/run` calls it.
SHELL := /bin/bash
JOBS ?= $(shell nproc)
SOURCES = $(shell git ls-files '*.cc' '*.h' 2>/dev/null)

.PHONY: deps build release test test-dev test-asan test-tsan format-check format bench run clean

deps:
	@bash tools/install-deps.sh

build: deps
	cmake --preset dev >/dev/null
	cmake --build --preset dev -j $(JOBS)

release: deps
	cmake --preset release >/dev/null
	cmake --build --preset release -j $(JOBS)

# The Debian package (cmake/packaging.cmake, packaging/; docs/OPERATIONS.md, "Installing the
# package"): the release build of the installed binaries, packed by CPack into
# build/release/tokenwheel_<version>_<arch>.deb.
.PHONY: deb
DEB_TARGETS = tokenwheeld tokenwheel tokenwheel-crashtest tokenwheel-bench tw_man_pages
deb: deps
	cmake --preset release >/dev/null
	cmake --build --preset release -j $(JOBS) --target $(DEB_TARGETS)
	cd build/release && rm -f tokenwheel_*.deb && cpack -G DEB >/dev/null
	@ls build/release/tokenwheel_*.deb | sed 's/^/deb: /'

format-check:
	@clang-format --dry-run --Werror $(SOURCES) && echo "format: ok"

format:
	clang-format -i $(SOURCES)

test-dev: deps
	cmake --preset dev >/dev/null
	cmake --build --preset dev -j $(JOBS)
	ctest --preset dev

test-asan: deps
	cmake --preset asan >/dev/null
	cmake --build --preset asan -j $(JOBS)
	ctest --preset asan

test-tsan: deps
	cmake --preset tsan >/dev/null
	cmake --build --preset tsan -j $(JOBS)
	ctest --preset tsan

test: format-check test-dev test-asan test-tsan fuzz-smoke

BENCH_OUT := build/bench-results
bench: release
	@mkdir -p $(BENCH_OUT)
	@for b in build/release/bench/tw_bench_*; do \
	  [ -x "$$b" ] || continue; n=$$(basename $$b); echo "== $$n"; \
	  $$b --benchmark_out=$(BENCH_OUT)/$$n.json --benchmark_out_format=json $(BENCH_ARGS) || exit 1; \
	done

# tokenwheel-bench against its peers (docs/BENCHMARKS.md, "tokenwheel-bench"): every workload on
# tokenwheel (both front ends), PostgreSQL and Redis, results in $(BENCH_PEERS_OUT), then the
# plots in docs/bench/*.png and the tables in docs/BENCHMARKS.md regenerated from them.
# BENCH_PEERS_SECONDS per load step, BENCH_PEERS_TASKS for the storm, heartbeats and recovery.
.PHONY: bench-peers
BENCH_PEERS_OUT := build/bench-peers
BENCH_PEERS_SECONDS ?= 10
BENCH_PEERS_TASKS ?= 1000000
BENCH_PEERS_CLIENTS ?= 64
BENCH_PEERS_CLOCK_S ?= 30
TW_BENCH = ./build/release/tools/tokenwheel-bench
BENCH_PEERS_ARGS = --systems tokenwheel,postgres,redis --seconds $(BENCH_PEERS_SECONDS) \
  --out $(BENCH_PEERS_OUT)
bench-peers: release
	@rm -rf $(BENCH_PEERS_OUT) && mkdir -p $(BENCH_PEERS_OUT)
	$(TW_BENCH) --workload callback --sweep --clients $(BENCH_PEERS_CLIENTS) $(BENCH_PEERS_ARGS)
	$(TW_BENCH) --workload callback --batch 100 --clients 8 $(BENCH_PEERS_ARGS)
	$(TW_BENCH) --workload activity --clients $(BENCH_PEERS_CLIENTS) $(BENCH_PEERS_ARGS)
	$(TW_BENCH) --workload timeout-storm --tasks $(BENCH_PEERS_TASKS) --clients 8 \
	  --clock-s $(BENCH_PEERS_CLOCK_S) $(BENCH_PEERS_ARGS)
	$(TW_BENCH) --workload heartbeats --tasks $(BENCH_PEERS_TASKS) \
	  --clients $(BENCH_PEERS_CLIENTS) $(BENCH_PEERS_ARGS)
	$(TW_BENCH) --workload recovery --tasks $(BENCH_PEERS_TASKS) --clients 8 $(BENCH_PEERS_ARGS)
	bash tools/bench/report.sh $(BENCH_PEERS_OUT) docs/bench docs/BENCHMARKS.md

# Disk usage under steady load with retention on (docs/OPERATIONS.md, "Retention"): the data
# directory's size every SAMPLE_S seconds while tokenwheel-bench runs the callback workload at
# RATE/s for RUN_S seconds, tokenwheeld keeping finished tasks RETENTION_S seconds.
.PHONY: bench-retention
bench-retention: release
	bash tools/bench/retention.sh build/retention
	cp build/retention/retention-disk.png docs/bench/retention-disk.png

# The server in the foreground on ./data: Cap'n Proto on 127.0.0.1:7411, the AWS gateway on
# 127.0.0.1:8083 (Ctrl-C stops it cleanly).
run: release
	./build/release/tools/tokenwheeld --data-dir ./data --rpc-listen 127.0.0.1:7411 \
	  --aws-listen 127.0.0.1:8083

# ---- Fuzzing: the libFuzzer targets of tests/fuzz (docs/RELIABILITY.md, "Fuzzing") ----
# `make fuzz FUZZ_SECONDS=N` runs every target N seconds; `make fuzz-smoke` (in `make test`)
# FUZZ_SMOKE_SECONDS each. A target runs on build/fuzz/corpus-work/<target>: its seed corpus
# copied there (the repository is never written), plus whatever earlier runs found. Any crash,
# hang, leak or sanitizer report fails the run; the input is saved in build/fuzz/artifacts/<target>/
# and the log is build/fuzz/logs/<target>.log. Reproduce with
#   build/fuzz/tests/fuzz/tw_fuzz_<target> build/fuzz/artifacts/<target>/crash-...
.PHONY: fuzz fuzz-smoke fuzz-build
FUZZ_TARGETS = token json aws_request sigv4 gateway capnp
FUZZ_SECONDS ?= 60
FUZZ_SMOKE_SECONDS ?= 12
FUZZ_SMOKE_TARGETS ?= token json aws_request sigv4 gateway capnp
FUZZ_ENV = ASAN_OPTIONS=abort_on_error=1:detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

fuzz-build: deps
	cmake --preset fuzz >/dev/null
	cmake --build --preset fuzz -j $(JOBS)

# $(1): seconds per target; $(2): the targets.
define run_fuzz_targets
	@mkdir -p build/fuzz/logs
	@for t in $(2); do \
	  work=build/fuzz/corpus-work/$$t; art=build/fuzz/artifacts/$$t/; log=build/fuzz/logs/$$t.log; \
	  mkdir -p $$work $$art && cp -n tests/fuzz/corpus/$$t/* $$work/ && \
	  if ! $(FUZZ_ENV) build/fuzz/tests/fuzz/tw_fuzz_$$t -max_total_time=$(1) -timeout=30 \
	      -print_final_stats=1 -artifact_prefix=$$art $$work >$$log 2>&1; then \
	    tail -n 60 $$log; echo "fuzz: tw_fuzz_$$t FAILED (log: $$log, input: $$art)"; exit 1; \
	  fi; \
	  runs=$$(sed -n 's/^stat::number_of_executed_units: *//p' $$log); \
	  rate=$$(sed -n 's/^stat::average_exec_per_sec: *//p' $$log); \
	  echo "fuzz: tw_fuzz_$$t ok: $$runs runs in $(1) s ($$rate/s), corpus $$(ls $$work | wc -l) files"; \
	done
endef

fuzz: fuzz-build
	$(call run_fuzz_targets,$(FUZZ_SECONDS),$(FUZZ_TARGETS))

fuzz-smoke: fuzz-build
	$(call run_fuzz_targets,$(FUZZ_SMOKE_SECONDS),$(FUZZ_SMOKE_TARGETS))

# tokenwheel-crashtest on the release build (docs/RELIABILITY.md): MODE kill, power-loss or
# disk-full (root); SEED replays a run (default: a random seed, printed). `make test` runs a
# bounded smoke of each mode (tests/CMakeLists.txt, label crashtest).
.PHONY: crashtest
CYCLES ?= 100
MODE ?= kill
SEED ?= 0
crashtest: release
	./build/release/tools/tokenwheel-crashtest --mode $(MODE) --cycles $(CYCLES) --seed $(SEED)

clean:
	rm -rf build
