# The README's commands. Each is a thin wrapper around a CMake preset (CMakePresets.json), so that
# `cmake --preset X && cmake --build --preset X && ctest --preset X` does the same by hand.
#   make demo      build release, run build/release/demo/ftrt_demo
#   make test      build debug (-O0 -g, FTRT_DEBUG=1), run its tests (with the install test)
#   make bench     build release, run build/release/bench/ftrt_bench build/bench/results.json
#   make tsan      build and test under ThreadSanitizer
#   make asan      build and test under AddressSanitizer + UBSan
#   make clang     build everything with clang -Werror in build/clang (the clang-clean check)
#   make install   install the release build to PREFIX (default /usr/local)
#   make clean     remove build/
#   make deps      install everything any target uses (scripts/install-deps all)

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

.PHONY: all deps release debug demo test bench tsan asan clang install clean

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
	build/release/demo/ftrt_demo

test:
	@scripts/install-deps test
	$(call configure_and_build,debug)
	$(CTEST) --preset debug

bench:
	@scripts/install-deps bench
	$(call configure_and_build,release,ftrt_bench)
	mkdir -p build/bench
	build/release/bench/ftrt_bench build/bench/results.json

tsan:
	@scripts/install-deps tsan
	$(call configure_and_build,tsan)
	$(call without_aslr,$(CTEST) --preset tsan)

asan:
	@scripts/install-deps asan
	$(call configure_and_build,asan)
	$(CTEST) --preset asan

clang:
	@scripts/install-deps clang
	$(call configure_and_build,clang)

install:
	@scripts/install-deps build
	$(call configure_and_build,release,ftrt_static ftrt_shared)
	$(CMAKE) --install build/release --prefix "$(PREFIX)"

clean:
	rm -rf build
