#!/usr/bin/env bash
# Sets up, builds and runs every test suite (unit, codec, store, end-to-end with a real budgetd).
# BUDGET_SANITIZE=1 builds and runs them under AddressSanitizer and UBSan, in build-asan/.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${BUDGET_SANITIZE:-0}" = 1 ]; then
  export BUILD_DIR=build-asan
  scripts/setup.sh -DBUDGET_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug
else
  export BUILD_DIR=build
  scripts/setup.sh
fi
cd "$BUILD_DIR"
ctest --output-on-failure --timeout 600 2>&1 | tee ctest.log
exit "${PIPESTATUS[0]}"
