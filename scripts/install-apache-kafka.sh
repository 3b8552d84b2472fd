#!/usr/bin/env bash
# Resolves Apache Kafka 4.4 (the broker, org.apache.kafka:kafka_2.13, and its command-line
# tools, org.apache.kafka:kafka-tools) and their dependencies from Maven Central into
# target/apache-kafka/libs/, for the tests that use Kafka itself as the reference
# (tests/kafka_diff.rs, tests/kafka_tools.rs; harness in tests/common/apache_kafka.rs).
# Idempotent: does nothing when the jars are there and tests/apache-kafka/pom.xml has not
# changed since. Installs Java 17 and Maven from Debian when missing (as root).
set -euo pipefail
cd "$(dirname "$0")/.."

pom=tests/apache-kafka/pom.xml
dest=target/apache-kafka
stamp="$dest/libs/.complete"
if [[ -f "$stamp" && ! "$pom" -nt "$stamp" ]]; then
  exit 0
fi

if ! command -v java >/dev/null 2>&1 || ! command -v mvn >/dev/null 2>&1; then
  echo "installing Java 17 and Maven for Apache Kafka"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends openjdk-17-jre-headless maven
fi

echo "resolving Apache Kafka (tests/apache-kafka/pom.xml) into $dest/libs/"
rm -rf "$dest/libs"
mkdir -p "$dest"
mvn -q -B -Dstyle.color=never -f "$pom" dependency:copy-dependencies \
  -DincludeScope=runtime -DoutputDirectory="$PWD/$dest/libs"
# Written last: a run cut short leaves no stamp and is redone
touch "$stamp"
