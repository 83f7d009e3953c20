#!/usr/bin/env bash
# Installs everything the build and the tests need on a fresh Debian 12 machine. Idempotent:
# packages already present are skipped, so a second run costs a few seconds.
set -euo pipefail

debian_packages=(
  build-essential cmake ninja-build pkg-config
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc
  libabsl-dev libgtest-dev libgmock-dev
  libdnnl-dev nlohmann-json3-dev libpcre2-dev libonig-dev libutf8proc-dev zlib1g-dev
  clang libclang-rt-14-dev  # libFuzzer for the fuzz targets
  python3-venv
  chromium  # headless browser for the Python client's dashboard test (GLASSBOX_REQUIRE_BROWSER=1)
)

missing=()
for pkg in "${debian_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

