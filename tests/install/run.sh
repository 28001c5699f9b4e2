#!/usr/bin/env bash
# run.sh BUILD_DIR WORK_DIR CMAKE CC GENERATOR: install the ftrt in BUILD_DIR to a fresh prefix under
# WORK_DIR, then build and run a consumer of it twice: with find_package(ftrt) (the CMake package
# config and its three targets) and with pkg-config (shared, and static with Libs.private). Exits 77,
# which ctest reports as skipped, if pkg-config is missing after the find_package half passed.
set -euo pipefail
trap 'echo "run.sh: line $LINENO failed: $BASH_COMMAND" >&2' ERR

build_dir=$1 work_dir=$2 cmake=$3 cc=$4 generator=$5
here=$(cd "$(dirname "$0")" && pwd)
prefix=$work_dir/prefix

rm -rf "$work_dir"
mkdir -p "$work_dir"
# quietly LOG COMMAND...: run it with its output in LOG, shown only if it fails.
quietly() {
    local log=$1
    shift
    "$@" >"$log" 2>&1 || { echo "failed: $*" >&2; cat "$log" >&2; return 1; }
}

quietly "$work_dir/install.log" "$cmake" --install "$build_dir" --prefix "$prefix"

echo "== find_package(ftrt) from $prefix"
quietly "$work_dir/consumer-configure.log" "$cmake" -S "$here" -B "$work_dir/cmake-consumer" \
    -G "$generator" -DCMAKE_C_COMPILER="$cc" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_BUILD_TYPE=Debug
"$cmake" --build "$work_dir/cmake-consumer"
for target in ftrt_static ftrt_shared ftrt; do
    "$work_dir/cmake-consumer/consumer_$target"
done
# The static consumer must not need libftrt.so at run time; the shared ones must. (ldd's output is
# kept first: `ldd | grep -q` can die of SIGPIPE, which pipefail would report as a failure.)
static_needs=$(ldd "$work_dir/cmake-consumer/consumer_ftrt_static")
shared_needs=$(ldd "$work_dir/cmake-consumer/consumer_ftrt")
if [[ $static_needs == *libftrt* ]]; then
    echo "consumer_ftrt_static depends on a shared libftrt:" >&2
    echo "$static_needs" >&2
    exit 1
fi
if [[ $shared_needs != *"libftrt.so.0 "* ]]; then
    echo "consumer_ftrt (ftrt::ftrt) does not load libftrt.so.0:" >&2
    echo "$shared_needs" >&2
    exit 1
fi

if ! command -v pkg-config >/dev/null; then
    echo "pkg-config not found: skipping the pkg-config half"
    exit 77
fi
echo "== pkg-config ftrt from $prefix"
PKG_CONFIG_PATH=$(dirname "$(find "$prefix" -name ftrt.pc)")
export PKG_CONFIG_PATH
pkg-config --exists --print-errors 'ftrt >= 0.1'
cflags=$(pkg-config --cflags ftrt)
libs=$(pkg-config --libs ftrt)
static_libs=$(pkg-config --static --libs ftrt)
libdir=$(pkg-config --variable=libdir ftrt)
echo "cflags: $cflags; libs: $libs; static libs: $static_libs"
[[ " $static_libs " == *" -lpthread "* ]] || { echo "Libs.private lacks -lpthread" >&2; exit 1; }

# Word splitting of the pkg-config output is intended.
# shellcheck disable=SC2086
"$cc" -std=c11 -Wall -Wextra -Werror $cflags "$here/consumer.c" -o "$work_dir/pc-shared" $libs
LD_LIBRARY_PATH=$libdir "$work_dir/pc-shared"
# The --static flags with -lftrt pointed at the archive, as a static-only consumer would link.
# shellcheck disable=SC2086
"$cc" -std=c11 -Wall -Wextra -Werror $cflags "$here/consumer.c" -o "$work_dir/pc-static" \
    ${static_libs/-lftrt/-l:libftrt.a}
env -u LD_LIBRARY_PATH "$work_dir/pc-static"
pc_static_needs=$(ldd "$work_dir/pc-static")
if [[ $pc_static_needs == *libftrt* ]]; then
    echo "pc-static depends on a shared libftrt:" >&2
    echo "$pc_static_needs" >&2
    exit 1
fi
echo "install check passed"
