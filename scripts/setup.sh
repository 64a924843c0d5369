#!/usr/bin/env bash
# Installs what budgetd needs to build and test on Debian 12, and builds it into build/.
# Usage: scripts/setup.sh [extra cmake options]
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(build-essential cmake pkg-config libuv1-dev liblmdb-dev libmsgpack-dev
          libsodium-dev libssl-dev libcriterion-dev lmdb-utils python3 python3-msgpack
          zlib1g-dev chromium)
# The Node.js example (docs/examples/node): node and npm, from Debian where none is installed.
command -v node >/dev/null || packages+=(nodejs)
command -v npm >/dev/null || packages+=(npm)
scripts/install-packages.sh setup "${packages[@]}"

# The example's one package, at the version its package-lock.json pins.
if [ ! -d docs/examples/node/node_modules/@msgpack/msgpack ]; then
  npm ci --prefix docs/examples/node --no-audit --no-fund --loglevel=error >/dev/null
fi

build=${BUILD_DIR:-build}
log="$build/setup.log"
mkdir -p "$build"
if ! { cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" &&
       cmake --build "$build" -j"$(nproc)"; } >"$log" 2>&1; then
  cat "$log"
  echo "setup: the build failed (log: $log)" >&2
  exit 1
fi
echo "setup: built into $build/"
