#!/usr/bin/env bash
# Build step of the apache/kafka:3.9.1 stand-in: a class-data-sharing archive for the CLI tools
# (/opt/kafka/tools.jsa), so that each kafka-*.sh call (the healthcheck, kafka-setup) starts faster. The
# classes are those the tools load when they run against an unreachable broker with short timeouts.
set -euo pipefail
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
printf 'request.timeout.ms=500\ndefault.api.timeout.ms=1000\nretries=0\n' >"$work/client.properties"
cp='/opt/kafka/libs/*'
i=0
for cmd in "kafka.admin.AclCommand --list" \
	"kafka.admin.ConfigCommand --describe --entity-type users" \
	"kafka.admin.BrokerApiVersionsCommand" \
	"org.apache.kafka.tools.TopicCommand --list"; do
	i=$((i + 1))
	# shellcheck disable=SC2086 # the class and its arguments
	timeout 60 java -Xshare:off -XX:DumpLoadedClassList="$work/$i.classlist" \
		-Dlog4j.configuration=file:/etc/kafka/docker/tools-log4j.properties -cp "$cp" \
		$cmd --bootstrap-server 127.0.0.1:1 --command-config "$work/client.properties" >/dev/null 2>&1 || true
done
cat "$work"/*.classlist | sort -u >"$work/tools.classlist"
java -Xshare:dump -XX:SharedClassListFile="$work/tools.classlist" -XX:SharedArchiveFile=/opt/kafka/tools.jsa \
	-cp "$cp" >"$work/dump.log" 2>&1 || { tail -n 20 "$work/dump.log" >&2; exit 1; }
