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

test: format-check test-dev test-asan test-tsan

BENCH_OUT := build/bench-results
bench: release
	@mkdir -p $(BENCH_OUT)
	@for b in build/release/bench/tw_bench_*; do \
	  [ -x "$$b" ] || continue; n=$$(basename $$b); echo "== $$n"; \
	  $$b --benchmark_out=$(BENCH_OUT)/$$n.json --benchmark_out_format=json $(BENCH_ARGS) || exit 1; \
	done

# The server in the foreground on ./data: Cap'n Proto on 127.0.0.1:7411, the AWS gateway on
# 127.0.0.1:8083 (Ctrl-C stops it cleanly).
run: release
	./build/release/tools/tokenwheeld --data-dir ./data --rpc-listen 127.0.0.1:7411 \
	  --aws-listen 127.0.0.1:8083

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
