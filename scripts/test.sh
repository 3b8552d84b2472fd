#!/usr/bin/env bash
# Runs the whole Sluice test suite on a fresh Debian machine with a Rust toolchain.
# Installs the system packages the tests need (etcd, protoc for the etcd feature, iproute2
# for network namespaces, e2fsprogs) (apt-get, as root) when they are missing,
# then runs every test with cargo-nextest when present (plain `cargo test` otherwise)
# and prints the runner's summary.
set -euo pipefail
cd "$(dirname "$0")/.."

# command or file -> Debian package that provides it
packages=(
  "chattr:e2fsprogs"
  "mount:mount"
  "ip:iproute2"
  "etcd:etcd-server"
  "protoc:protobuf-compiler"
  "/usr/include/google/protobuf/descriptor.proto:libprotobuf-dev"
)
missing=()
for entry in "${packages[@]}"; do
  what="${entry%%:*}"; pkg="${entry#*:}"
  if [[ "$what" == /* ]]; then
    [[ -e "$what" ]] || missing+=("$pkg")
  else
    command -v "$what" >/dev/null 2>&1 || missing+=("$pkg")
  fi
done
if ((${#missing[@]})); then
  echo "installing system packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The etcd lease store and its tests need the `etcd` feature (protoc at build time).
features=(--features sluice/etcd,sluice/postgres)
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace "${features[@]}" --no-fail-fast "$@"
  # nextest does not run doctests
  cargo test --workspace "${features[@]}" --doc --quiet
else
  cargo test --workspace "${features[@]}" --no-fail-fast "$@"
fi
