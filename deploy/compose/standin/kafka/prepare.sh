#!/usr/bin/env bash
# prepare.sh [CONTEXT]: stages the apache/kafka:3.9.1 stand-in's jars into CONTEXT/stage/libs (gitignored)
# before `docker build` (build.sh calls it):
# the Kafka 3.9.1 runtime that deploy/infra/infra.sh resolves from Maven Central into
# ~/.cache/shopmesh/kafka-3.9.1/libs (resolved here the same way when absent) plus the kafka-tools jar
# (TopicCommand, ConsoleConsumer, ConsumerGroupCommand, ...) into ~/.cache/shopmesh/kafka-3.9.1-tools.
# Quick when warm: Maven runs only when a cache is missing; stage/ is rewritten only when it differs.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# build.sh passes the build context (a scratch copy of this folder); by hand, this folder is the context.
ctx=${1:-$here}
cache=${SHOPMESH_CACHE:-$HOME/.cache/shopmesh}
core=$cache/kafka-3.9.1
tools=$cache/kafka-3.9.1-tools

# resolve DIR DEPENDENCY-XML: Maven copies the runtime dependencies into DIR/libs, once.
resolve() {
	local dir=$1 deps=$2
	[[ -f $dir/.complete ]] && return 0
	command -v mvn >/dev/null || {
		echo "kafka/prepare.sh: mvn is needed once to fetch the Kafka jars from Maven Central" >&2
		exit 1
	}
	mkdir -p "$dir"
	cat >"$dir/pom.xml" <<-POM
		<project xmlns="http://maven.apache.org/POM/4.0.0">
		  <modelVersion>4.0.0</modelVersion>
		  <groupId>shopmesh.infra</groupId>
		  <artifactId>kafka-runtime</artifactId>
		  <version>1</version>
		  <packaging>pom</packaging>
		  <dependencies>
		    $deps
		  </dependencies>
		</project>
	POM
	rm -rf "$dir/libs"
	(cd "$dir" && mvn -B -Dstyle.color=never dependency:copy-dependencies -DoutputDirectory=libs \
		-DincludeScope=runtime >"$dir/mvn.log" 2>&1) || {
		tail -n 30 "$dir/mvn.log" >&2
		exit 1
	}
	touch "$dir/.complete"
}

# The same dependencies as infra.sh's install_kafka (its cache is shared).
resolve "$core" '<dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>3.9.1</version></dependency>
		    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-reload4j</artifactId><version>1.7.36</version></dependency>'
resolve "$tools" '<dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId><version>3.9.1</version></dependency>'

# The core runtime + kafka-tools itself (its other dependencies are Kafka Connect's, not needed by the tools).
mkdir -p "$ctx/stage"
tmp=$(mktemp -d "$ctx/stage/.libs.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
cp -p "$core"/libs/*.jar "$tools/libs/kafka-tools-3.9.1.jar" "$tmp/"
if ! diff -rq "$tmp" "$ctx/stage/libs" >/dev/null 2>&1; then
	rm -rf "$ctx/stage/libs"
	mv "$tmp" "$ctx/stage/libs"
	chmod 0755 "$ctx/stage/libs"
fi
