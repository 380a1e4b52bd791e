#!/usr/bin/env bash
# Install the Debian 12 packages pytest-zygote needs to build and test.
# Idempotent: runs apt-get only for packages that are not installed yet.
# Usage: scripts/install-deps.sh [--heavy] [--bench]
#   --heavy: also pandas/scipy for examples/heavy
#   --bench: also what bench/ needs (numpy, pandas, scipy, sqlalchemy, matplotlib, hyperfine)
set -euo pipefail

packages=(
	meson ninja-build pkg-config gcc
	libseccomp-dev libbsd-dev libinih-dev
	python3-dev python3-pytest python3-venv
	python3-django python3-pytest-django python3-pytest-cov python3-pytest-asyncio
	python3-pytest-mock python3-hypothesis python3-pytest-timeout python3-pytest-xdist
	shellcheck python3-mesonpy python3-pip
	clang clang-format libclang-rt-14-dev valgrind python3-seccomp python3-debugpy
	python3-numpy libopenblas0-pthread
	python3-marshmallow python3-sqlalchemy python3-click
	python3-jinja2 python3-markupsafe
)
heavy_packages=(python3-pandas python3-scipy)
bench_packages=(python3-numpy python3-pandas python3-scipy python3-sqlalchemy python3-matplotlib hyperfine)

usage() {
	echo "usage: $0 [--heavy] [--bench]" >&2
	exit 64
}

for arg in "$@"; do
	case "$arg" in
	--heavy) packages+=("${heavy_packages[@]}") ;;
	--bench) packages+=("${bench_packages[@]}") ;;
	-h | --help)
		echo "usage: $0 [--heavy] [--bench]"
		exit 0
		;;
	*) usage ;;
	esac
done

missing=()
for pkg in "${packages[@]}"; do
	status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
	if [[ "$status" != "install ok installed" ]]; then
		missing+=("$pkg")
	fi
done

if ((${#missing[@]} == 0)); then
	echo "install-deps: all ${#packages[@]} packages already installed"
	exit 0
fi

if ((EUID != 0)); then
	if command -v sudo >/dev/null 2>&1; then
		sudo=(sudo)
	else
		echo "install-deps: missing packages: ${missing[*]}; run this script as root" >&2
		exit 1
	fi
else
	sudo=()
fi

echo "install-deps: installing ${missing[*]}"
"${sudo[@]}" apt-get update
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
	apt-get install -y --no-install-recommends "${missing[@]}"
