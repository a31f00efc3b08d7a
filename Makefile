# The two commands a new machine needs: `make demo` and `make test`. Each installs what is
# missing (scripts/install-deps), configures, builds and runs.
#   make demo    the fluid-cell example: lid-driven cavity, Re 100, on every core
#   make test    the format check, unit + multi-process tests (dev, ASan+UBSan, TSan),
#                clang-tidy over lib/,
#                the short chaos, soak and fuzz runs
#   make bench   every benchmark and its report (bench/results/), then docs/benchmarks.md
#   make chaos   the long chaos run: 10 000 kill iterations (CHAOS_ITERATIONS; CHAOS_SEED
#                repeats a run, default a random seed, printed)
#   make soak    sustained load for SOAK_SECONDS (default 300) with memory and fds sampled
#   make fuzz    every libFuzzer target for FUZZ_SECONDS each (default 300)
#                (chaos, soak and fuzz: then bench/results/robustness.md, docs/robustness.md)
#   make reports docs/benchmarks.md and docs/robustness.md from bench/results/, never by hand
#   make docs    the API reference (Doxygen, build/docs/html/); fails on an undocumented
#                public entity; then compiles the C++ blocks of README.md and docs/*.md
.PHONY: deps demo test format test-dev test-asan test-tsan test-fuzz tidy bench chaos soak fuzz \
        robustness-report reports docs clean

JOBS ?= $(shell nproc)
CHAOS_ITERATIONS ?= 10000
CHAOS_SEED ?=
SOAK_SECONDS ?= 300
FUZZ_SECONDS ?= 300

deps:
	@scripts/install-deps

demo: deps
	cmake --preset release >/dev/null
	cmake --build --preset release --target fluid_cells -j $(JOBS)
	./build/release/examples/fluid_cells/fluid_cells --case cavity --re 100 --nx 129 --ny 129 \
	  --procs $(JOBS) --steps 60000 --tol 1e-6 --out build/demo

test: format test-dev test-asan test-tsan tidy test-fuzz

test-dev: deps
	cmake --preset dev
	cmake --build --preset dev -j $(JOBS)
	ctest --preset dev -j $(JOBS)

test-asan: deps
	cmake --preset asan
	cmake --build --preset asan -j $(JOBS)
	ctest --preset asan -j $(JOBS)

# ThreadSanitizer over the suites that share memory between threads (tests/threads, pool).
test-tsan: deps
	cmake --preset tsan
	cmake --build --preset tsan -j $(JOBS)
	ctest --preset tsan -j $(JOBS)

# clang-tidy over lib/ with the checked-in .clang-tidy; any warning fails. Uses the dev
# build's compile_commands.json.
# clang-format over every C++ file (.clang-format); any difference fails. `scripts/format
# --fix` rewrites them.
format: deps
	scripts/format

tidy: deps
	cmake --preset dev >/dev/null
	scripts/tidy build/dev

# Each fuzz target for IPCKIT_FUZZ_SECONDS (20 s) from its seed corpus: a crash, a hang or
# an unexpected exception fails.
test-fuzz: deps
	cmake --preset fuzz
	cmake --build --preset fuzz -j $(JOBS)
	ctest --test-dir build/fuzz -j $(JOBS) --output-on-failure

chaos: deps
	cmake --preset dev >/dev/null
	cmake --build --preset dev --target ipckit_chaos -j $(JOBS)
	./build/dev/tests/chaos/ipckit_chaos --iterations $(CHAOS_ITERATIONS) $(if $(CHAOS_SEED),--seed $(CHAOS_SEED)) \
	  --json build/chaos.json
	@$(MAKE) --no-print-directory robustness-report

soak: deps
	cmake --preset dev >/dev/null
	cmake --build --preset dev --target ipckit_soak -j $(JOBS)
	./build/dev/tests/ipckit_soak --seconds $(SOAK_SECONDS) --json build/soak.json
	@$(MAKE) --no-print-directory robustness-report

fuzz: deps
	fuzz/run.sh $(FUZZ_SECONDS)
	@$(MAKE) --no-print-directory robustness-report

bench: deps
	cmake --preset release >/dev/null
	cmake --build --preset release -j $(JOBS)
	bench/run.sh build/release
	@$(MAKE) --no-print-directory reports

# The long runs' JSON (build/chaos.json, build/soak.json, build/fuzz/summary.json; a run not
# made now keeps its last copy) into bench/results/, with robustness.md there; then the pages.
robustness-report:
	python3 bench/robustness_report.py >/dev/null
	@$(MAKE) --no-print-directory reports

# docs/benchmarks.md and docs/robustness.md, from bench/results/ only (bench/docs_report.py).
reports:
	python3 bench/docs_report.py

# The API reference from the headers' /// comments (docs/Doxyfile: any warning fails), and a
# check that every C++ block in README.md and docs/*.md compiles (-Wall -Wextra -Werror).
docs: deps
	doxygen docs/Doxyfile
	@echo "docs: build/docs/html/index.html"
	python3 docs/check_snippets.py

clean:
	rm -rf build
