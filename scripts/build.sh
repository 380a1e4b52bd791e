#!/usr/bin/env bash
# Configure (or reconfigure) the meson build directory build/ and compile.
# Usage: scripts/build.sh [extra meson setup options, e.g. -Dwerror=true]
# PYTHON selects the interpreter to embed (default /usr/bin/python3, never the
# first python3 on PATH).
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-/usr/bin/python3}

if [[ -f build/meson-private/coredata.dat ]]; then
	meson setup --reconfigure build "-Dpython=$PYTHON" "$@"
else
	meson setup build "-Dpython=$PYTHON" "$@"
fi
meson compile -C build
