#!/usr/bin/env bash
# Runs the whole Sluice test suite on a fresh Debian machine with a Rust toolchain.
# Installs the system packages the tests need (apt-get, as root) when they are missing,
# then runs every test with cargo-nextest when present (plain `cargo test` otherwise)
# and prints the runner's summary.
set -euo pipefail
cd "$(dirname "$0")/.."

# command -> Debian package that provides it
packages=(
  "chattr:e2fsprogs"
  "mount:mount"
)
missing=()
for entry in "${packages[@]}"; do
  cmd="${entry%%:*}"; pkg="${entry#*:}"
  command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "installing system packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
  # nextest does not run doctests
  cargo test --workspace --doc --quiet
else
  cargo test --workspace --no-fail-fast "$@"
fi
