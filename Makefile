# The README's commands. Each is a thin wrapper around a CMake preset (CMakePresets.json), so that
# `cmake --preset X && cmake --build --preset X && ctest --preset X` does the same by hand.
#   make demo      build release, run build/release/demo/ftrt_demo (its trace: build/demo-trace.json)
#   make test      build debug (-O0 -g, FTRT_DEBUG=1), run its tests (with the install test)
#   make bench     build release, run build/release/bench/ftrt_bench build/bench/results.json
#                  and draw it with scripts/bench-report as build/bench/report.html (needs python3)
#   make tsan      build and test under ThreadSanitizer
#   make asan      build and test under AddressSanitizer + UBSan
#   make stackref-debug  build and test with FTRT_STACKREF_DEBUG (stackrefs as checked ids)
#   make clang     build everything with clang -Werror in build/clang (the clang-clean check)
#   make install   install the release build to PREFIX (default /usr/local)
#   make clean     remove build/
#   make deps      install everything any target uses (scripts/install-deps all)
#   make oracle    build debug, run the gc-oracle scenarios against ftrt (GC_ORACLE_DIR, below)
#   make fuzz      build debug and the CPython driver, run the gc-oracle fuzzer, strict and not
#   make trace-screenshot  docs/tracing.md's picture: TRACE_JSON (default build/demo-trace.json) opened
#                  in a trace viewer (speedscope, in headless Chromium) to TRACE_PNG (default
#                  docs/images/demo-trace.png), by scripts/trace-screenshot; not part of CI or `make test`

PREFIX ?= /usr/local
MAKEFLAGS += --no-print-directory
CMAKE ?= cmake
CTEST ?= ctest

# ThreadSanitizer needs a fixed layout of the address space; kernels with more mmap randomisation
# than it expects make it die with "unexpected memory mapping". setarch -R turns randomisation off
# for the test run; where setarch is refused (some sandboxes) or missing the tests run as they are.
# Decided by the recipe's shell, so that a setarch install-deps has just installed counts.
without_aslr = if setarch "$$(uname -m)" -R true >/dev/null 2>&1; then setarch "$$(uname -m)" -R $(1); else $(1); fi

# $(1): the preset; $(2): optional targets, so that `make demo` does not wait for (or trip over) tests.
configure_and_build = $(CMAKE) --preset $(1) && $(CMAKE) --build --preset $(1) $(if $(2),--target $(2))

# The gc-oracle folder (tests/gc_oracle/backend_ftrt.c, docs/gc.md): a development instrument that
# checks ftrt's collector against CPython 3.11's gc module. Where it is absent, oracle and fuzz say
# they are skipped. FUZZ_N: scenarios per fuzzer run; FUZZ_SEED: the fuzzer's seed (a new one finds new
# scenarios).
GC_ORACLE_DIR ?= $(abspath ../shared/gc-oracle)
FUZZ_N ?= 5000
FUZZ_SEED ?= 1
PYTHON311 ?= python3.11
gcdriver_ftrt = build/debug/tests/gc_oracle/gcdriver_ftrt

# The trace make trace-screenshot opens, and the PNG it writes.
TRACE_JSON ?= build/demo-trace.json
TRACE_PNG ?= docs/images/demo-trace.png

.PHONY: all deps release debug demo test bench tsan asan stackref-debug clang install clean oracle fuzz \
	trace-screenshot

all: release

# Each target first runs scripts/install-deps with the groups it needs, which installs what is
# missing (apt-get, through sudo when not root) or says in one line what is missing and how to get it.
# `make deps` installs everything, as CI does.
deps:
	@scripts/install-deps all

release:
	@scripts/install-deps build
	$(call configure_and_build,release)

debug:
	@scripts/install-deps build
	$(call configure_and_build,debug)

demo:
	@scripts/install-deps build
	$(call configure_and_build,release,ftrt_demo)
	FTRT_DEMO_TRACE=build/demo-trace.json build/release/demo/ftrt_demo

test:
	@scripts/install-deps test
	$(call configure_and_build,debug)
	$(CTEST) --preset debug

bench:
	@scripts/install-deps bench
	$(call configure_and_build,release,ftrt_bench)
	mkdir -p build/bench
	build/release/bench/ftrt_bench build/bench/results.json
	@if command -v python3 >/dev/null 2>&1; then \
		python3 scripts/bench-report build/bench/results.json build/bench/report.html \
			--cpus "$$(nproc 2>/dev/null)" --commit "$$(git describe --always --dirty 2>/dev/null)"; \
	else echo "bench: no python3, so no build/bench/report.html (scripts/bench-report draws results.json)"; fi

tsan:
	@scripts/install-deps tsan
	$(call configure_and_build,tsan)
	$(call without_aslr,$(CTEST) --preset tsan)

asan:
	@scripts/install-deps asan
	$(call configure_and_build,asan)
	$(CTEST) --preset asan

stackref-debug:
	@scripts/install-deps test
	$(call configure_and_build,stackref-debug)
	$(CTEST) --preset stackref-debug

clang:
	@scripts/install-deps clang
	$(call configure_and_build,clang)

install:
	@scripts/install-deps build
	$(call configure_and_build,release,ftrt_static ftrt_shared)
	$(CMAKE) --install build/release --prefix "$(PREFIX)"

# The scenarios against ftrt: "N passed, 0 failed" (the gc_oracle ctest runs the same).
oracle:
	@if [ ! -f "$(GC_ORACLE_DIR)/driver/gcdriver.c" ]; then \
		echo "oracle skipped: no $(GC_ORACLE_DIR)/driver/gcdriver.c (set GC_ORACLE_DIR)"; exit 0; fi; \
	scripts/install-deps build && \
	$(CMAKE) --preset debug -DFTRT_GC_ORACLE_DIR="$(GC_ORACLE_DIR)" && \
	$(CMAKE) --build --preset debug --target gcdriver_ftrt && \
	GCDRIVER_OUT=build/gc-oracle/out "$(GC_ORACLE_DIR)/driver/check.sh" $(gcdriver_ftrt)

# Random scenarios: ftrt's driver against CPython's (built from a copy of the folder's driver/, which
# is read-only in CI), with the oracle's reachability rule for bodies (strict) and without. The
# differing scenarios are kept in build/gc-oracle/fuzz-strict and fuzz-no-strict.
fuzz:
	@if [ ! -f "$(GC_ORACLE_DIR)/driver/gcdriver.c" ]; then \
		echo "fuzz skipped: no $(GC_ORACLE_DIR)/driver/gcdriver.c (set GC_ORACLE_DIR)"; exit 0; fi; \
	scripts/install-deps oracle || exit 1; \
	if ! command -v $(PYTHON311) >/dev/null 2>&1 || ! command -v $(PYTHON311)-config >/dev/null 2>&1; then \
		echo "fuzz skipped: it needs $(PYTHON311) and $(PYTHON311)-config"; exit 0; fi; \
	$(CMAKE) --preset debug -DFTRT_GC_ORACLE_DIR="$(GC_ORACLE_DIR)" && \
	$(CMAKE) --build --preset debug --target gcdriver_ftrt && \
	rm -rf build/gc-oracle/driver && mkdir -p build/gc-oracle && \
	cp -R "$(GC_ORACLE_DIR)/driver" build/gc-oracle/driver && \
	$(MAKE) -C build/gc-oracle/driver PYTHON=$(PYTHON311) gcdriver-cpython && \
	cd build/gc-oracle && status=0 && \
	echo "=== fuzz, strict" && \
	{ $(PYTHON311) driver/fuzz_compare.py -n $(FUZZ_N) --seed $(FUZZ_SEED) --reference driver/gcdriver-cpython \
		--driver ../../$(gcdriver_ftrt) --keep fuzz-strict || status=1; } && \
	echo "=== fuzz, --no-strict" && \
	{ $(PYTHON311) driver/fuzz_compare.py -n $(FUZZ_N) --seed $(FUZZ_SEED) --no-strict --reference driver/gcdriver-cpython \
		--driver ../../$(gcdriver_ftrt) --keep fuzz-no-strict || status=1; } && \
	exit $$status

# scripts/trace-screenshot installs its npm packages (the viewer, playwright-core) in build/trace-viewer.
trace-screenshot:
	@scripts/install-deps screenshot
	scripts/trace-screenshot $(TRACE_JSON) $(TRACE_PNG)

clean:
	rm -rf build
