#!/usr/bin/env bash
# kafka-run-class.sh of the apache/kafka:3.9.1 stand-in: runs a Kafka main class on /opt/kafka/libs with
# the JVM settings of the distribution's script (same variables: KAFKA_HEAP_OPTS, KAFKA_JVM_PERFORMANCE_OPTS,
# KAFKA_GC_LOG_OPTS, KAFKA_JMX_OPTS, JMX_PORT, KAFKA_LOG4J_OPTS, LOG_DIR, KAFKA_OPTS, CLASSPATH, JAVA_HOME).
# Usage: kafka-run-class.sh [-daemon] [-name NAME] [-loggc] CLASS [ARGS...]
set -euo pipefail

base_dir=$(cd "$(dirname "$0")/.." && pwd)

daemon=false name="" loggc=false
while [[ $# -gt 0 ]]; do
	case $1 in
	-daemon) daemon=true && shift ;;
	-name) name=$2 && shift 2 ;;
	-loggc) loggc=true && shift ;;
	*) break ;;
	esac
done
if [[ $# -lt 1 ]]; then
	echo "USAGE: $0 [-daemon] [-name servicename] [-loggc] classname [opts]" >&2
	exit 1
fi

cp="$base_dir/libs/*"
if [[ -n ${CLASSPATH-} ]]; then cp="$CLASSPATH:$cp"; fi

LOG_DIR=${LOG_DIR:-$base_dir/logs}
mkdir -p "$LOG_DIR" 2>/dev/null || true
KAFKA_LOG4J_OPTS=${KAFKA_LOG4J_OPTS:--Dlog4j.configuration=file:$base_dir/config/tools-log4j.properties}
KAFKA_HEAP_OPTS=${KAFKA_HEAP_OPTS:--Xmx256M}
KAFKA_JVM_PERFORMANCE_OPTS=${KAFKA_JVM_PERFORMANCE_OPTS:--server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent -XX:MaxInlineLevel=15 -Djava.awt.headless=true}
KAFKA_JMX_OPTS=${KAFKA_JMX_OPTS:--Dcom.sun.management.jmxremote=true -Dcom.sun.management.jmxremote.authenticate=false -Dcom.sun.management.jmxremote.ssl=false}
if [[ -n ${JMX_PORT-} ]]; then
	KAFKA_JMX_OPTS="$KAFKA_JMX_OPTS -Dcom.sun.management.jmxremote.port=$JMX_PORT"
	if [[ $KAFKA_JMX_OPTS != *-Dcom.sun.management.jmxremote.rmi.port=* ]]; then
		KAFKA_JMX_OPTS="$KAFKA_JMX_OPTS -Dcom.sun.management.jmxremote.rmi.port=$JMX_PORT"
	fi
fi
if [[ $loggc == true && -z ${KAFKA_GC_LOG_OPTS-} ]]; then
	KAFKA_GC_LOG_OPTS="-Xlog:gc*:file=$LOG_DIR/${name:-kafka}-gc.log:time,tags:filecount=10,filesize=100M"
fi

java=java
if [[ -n ${JAVA_HOME-} ]]; then java="$JAVA_HOME/bin/java"; fi

# The stand-in's own addition: the CLI tools start from a class-data-sharing archive made at build time
# (tools-cds.sh), unless the class path or the JVM options were changed.
cds=()
if [[ $1 != kafka.Kafka && -z ${CLASSPATH-} && -r $base_dir/tools.jsa && $KAFKA_JVM_PERFORMANCE_OPTS != *-Xshare* &&
	$KAFKA_JVM_PERFORMANCE_OPTS != *SharedArchiveFile* ]]; then
	cds=("-XX:SharedArchiveFile=$base_dir/tools.jsa")
fi

# The option strings are word-split on purpose, as the distribution's script does.
# shellcheck disable=SC2206
cmd=("$java" $KAFKA_HEAP_OPTS $KAFKA_JVM_PERFORMANCE_OPTS "${cds[@]}" ${KAFKA_GC_LOG_OPTS-} $KAFKA_JMX_OPTS
	"-Dkafka.logs.dir=$LOG_DIR" $KAFKA_LOG4J_OPTS -cp "$cp" ${KAFKA_OPTS-} "$@")
if [[ $daemon == true ]]; then
	nohup "${cmd[@]}" >"$LOG_DIR/${name:-kafka}.out" 2>&1 </dev/null &
else
	exec "${cmd[@]}"
fi
