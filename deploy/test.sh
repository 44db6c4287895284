#!/usr/bin/env bash
# Sets up everything and passes the tests: installs the dependencies, builds
# and runs the test suite twice (release, then ASan+UBSan with warnings as
# errors), checks the Debian package (deploy/package-test.sh), runs the
# threaded components' tests under ThreadSanitizer, then builds the
# libFuzzer targets and runs each for a short while.
#   FUZZ_SECONDS=N   seconds per fuzz target (default 20; 0 skips fuzzing)
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)
fuzz_seconds=${FUZZ_SECONDS:-20}

deploy/install-deps.sh
# One guest image cache for both builds' sandbox tests (its root filesystem
# takes a minute or two to build, once).
export SANDGATE_IMAGES=${SANDGATE_IMAGES:-$PWD/build/test-images}

echo "== release build and tests"
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build/release -j"$jobs"
ctest --test-dir build/release --output-on-failure -j"$jobs" 2>&1 | tee build/release-ctest.log

echo "== Debian package: build, install, run as its unit does, reload, purge"
deploy/package-test.sh build/release

echo "== ASan+UBSan build and tests"
cmake -S . -B build/asan -DCMAKE_BUILD_TYPE=Debug -DSANDGATE_SANITIZE=ON -DSANDGATE_BENCH=OFF >/dev/null
cmake --build build/asan -j"$jobs"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build/asan --output-on-failure -j"$jobs"

echo "== ThreadSanitizer build and the threaded components' tests (proxy, network log)"
# The proxy runs one event loop per core, with a log writer and reloads
# across them. A report from any process (the tests start the proxy) is
# written under build/tsan/reports and fails the stage.
cmake -S . -B build/tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSANDGATE_TSAN=ON -DSANDGATE_BENCH=OFF >/dev/null
cmake --build build/tsan -j"$jobs" --target sandgate sandgate_proxy_test sandgate_netlog_test
rm -rf build/tsan/reports && mkdir -p build/tsan/reports
tsan_failed=0
for t in sandgate_proxy_test sandgate_netlog_test; do
  TSAN_OPTIONS=log_path=$PWD/build/tsan/reports/tsan:second_deadlock_stack=1 build/tsan/tests/$t --gtest_brief=1 ||
    tsan_failed=1
done
if [ -n "$(ls -A build/tsan/reports)" ]; then
  cat build/tsan/reports/*
  echo "ThreadSanitizer reported the above" >&2
  tsan_failed=1
fi
[ "$tsan_failed" = 0 ]

if [ "$fuzz_seconds" -gt 0 ]; then
  echo "== fuzz targets, ${fuzz_seconds}s each"
  cmake -S . -B build/fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSANDGATE_FUZZ=ON \
    -DCMAKE_CXX_COMPILER=clang++ -DBUILD_TESTING=ON >/dev/null
  cmake --build build/fuzz -j"$jobs"
  for target in build/fuzz/tests/fuzz/fuzz_*; do
    name=$(basename "$target")
    corpus=$(mktemp -d)
    cp tests/fuzz/corpus/"${name#fuzz_}"/* "$corpus"/ 2>/dev/null || true
    echo "-- $name"
    "$target" -max_total_time="$fuzz_seconds" -print_final_stats=0 "$corpus" 2>&1 | tail -n 2
    rm -rf "$corpus"
  done
fi

echo "== release test summary"
grep -E 'tests passed|tests failed' build/release-ctest.log
