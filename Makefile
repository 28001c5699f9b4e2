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

PREFIX ?= /usr/local
MAKEFLAGS += --no-print-directory
CMAKE ?= cmake
CTEST ?= ctest

# ThreadSanitizer needs a fixed layout of the address space; kernels with more mmap randomisation
# than it expects make it die with "unexpected memory mapping". setarch -R turns randomisation off
# for the test run; where setarch is refused (some sandboxes) the tests run as they are.
NO_ASLR := $(shell setarch "$$(uname -m)" -R true >/dev/null 2>&1 && echo setarch "$$(uname -m)" -R)

# $(1): the preset; $(2): optional targets, so that `make demo` does not wait for (or trip over) tests.
configure_and_build = $(CMAKE) --preset $(1) && $(CMAKE) --build --preset $(1) $(if $(2),--target $(2))

.PHONY: all deps release debug demo test bench tsan asan clang install clean

all: release

# Installs what is missing (apt-get), so the commands above work on a fresh Debian machine.
deps:
	@scripts/install-deps

release: deps
	$(call configure_and_build,release)

debug: deps
	$(call configure_and_build,debug)

demo: deps
	$(call configure_and_build,release,ftrt_demo)
	build/release/demo/ftrt_demo

test: debug
	$(CTEST) --preset debug

bench: deps
	$(call configure_and_build,release,ftrt_bench)
	mkdir -p build/bench
	build/release/bench/ftrt_bench build/bench/results.json

tsan: deps
	$(call configure_and_build,tsan)
	$(NO_ASLR) $(CTEST) --preset tsan

asan: deps
	$(call configure_and_build,asan)
	$(CTEST) --preset asan

clang: deps
	$(call configure_and_build,clang)

install: deps
	$(call configure_and_build,release,ftrt_static ftrt_shared)
	$(CMAKE) --install build/release --prefix "$(PREFIX)"

clean:
	rm -rf build
