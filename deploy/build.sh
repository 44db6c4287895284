#!/usr/bin/env bash
# Installs the dependencies and builds sandgate into build/release.
#   deploy/build.sh [extra cmake -D options]
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/install-deps.sh
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
cmake --build build/release -j"$(nproc)"
