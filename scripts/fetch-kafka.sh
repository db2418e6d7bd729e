#!/usr/bin/env bash
# Fetches the Apache Kafka broker (org.apache.kafka:kafka_2.13 with its runtime dependencies,
# through Maven) into the cache folder the Kafka integration tests read (tests/it/support/kafka.rs):
#   ${XDG_CACHE_HOME:-$HOME/.cache}/webhook-sink/kafka-<version>/libs
# Once: a later run finds the folder complete and does nothing. Prints the folder on stdout;
# export it as WEBHOOK_SINK_KAFKA_LIBS to point the tests at another copy.
# Needs a Java runtime (17+) and Maven. .ci/run calls this script too.
set -euo pipefail
version="${KAFKA_VERSION:-4.4.0}"
dir="${XDG_CACHE_HOME:-$HOME/.cache}/webhook-sink/kafka-$version"
if [ -f "$dir/complete" ]; then
  echo "$dir/libs"
  exit 0
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cat > "$work/pom.xml" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.webhook-sink</groupId>
  <artifactId>kafka-fetch</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>$version</version>
    </dependency>
    <!-- The broker logs through slf4j 1.7; without a binding it would say nothing at all
         (the tests keep its log in the broker's temporary folder). -->
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>2.25.3</version>
    </dependency>
  </dependencies>
</project>
POM
rm -rf "$dir"
mkdir -p "$dir"
mvn -q -B -f "$work/pom.xml" dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$dir/libs" >&2
touch "$dir/complete"
echo "$dir/libs"
