# The two commands a new machine needs: `make demo` and `make test`. Each installs what is
# missing (scripts/install-deps), configures, builds and runs.
.PHONY: deps demo test test-dev test-asan bench clean

JOBS ?= $(shell nproc)

deps:
	@scripts/install-deps

demo: deps
	cmake --preset release >/dev/null
	cmake --build --preset release --target fluid_cells -j $(JOBS)
	./build/release/examples/fluid_cells/fluid_cells --case cavity --re 100 --nx 129 --ny 129 \
	  --procs $(JOBS) --steps 60000 --tol 1e-6 --out build/demo

test: test-dev test-asan

test-dev: deps
	cmake --preset dev
	cmake --build --preset dev -j $(JOBS)
	ctest --preset dev -j $(JOBS)

test-asan: deps
	cmake --preset asan
	cmake --build --preset asan -j $(JOBS)
	ctest --preset asan -j $(JOBS)

bench: deps
	cmake --preset release >/dev/null
	cmake --build --preset release -j $(JOBS)
	bench/run.sh build/release

clean:
	rm -rf build
