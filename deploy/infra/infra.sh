#!/usr/bin/env bash
# shopmesh real-infrastructure harness: PostgreSQL, Kafka (KRaft), NATS JetStream,
# Nacos (rnacos), Jaeger v2 — all as plain processes on 127.0.0.1, no Docker/systemd.
#
#   infra.sh up [component...]      install (cached) + start + wait ready; default: all
#   infra.sh install [component...] only download/build into the cache (CI runs the slow
#                                   builds in the background while other phases run)
#   infra.sh down [--purge]         stop everything; --purge also deletes data dirs
#   infra.sh start <component...>   start (same as up for the given components)
#   infra.sh stop <component...>    stop only those components
#   infra.sh restart <component...> stop then start
#   infra.sh kill <component...>    crash them: SIGKILL (postgres: immediate shutdown); start brings
#                                   them back with the same data
#   infra.sh status                 one line per component
#   infra.sh env                    print <repo>/.run/infra.env
#   infra.sh logs <component>       tail the component's log
#
# Components: postgres kafka nats nacos jaeger. See README.md next to this file.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/../.." && pwd)
CACHE=${SHOPMESH_CACHE:-$HOME/.cache/shopmesh}
RUN=${SHOPMESH_INFRA_DIR:-$REPO/.run/infra}
# The env file sits next to the data dir (<repo>/.run/infra.env by default), so a private set started
# with only SHOPMESH_INFRA_DIR never overwrites the shared set's file.
ENV_FILE=${SHOPMESH_INFRA_ENV:-$(dirname "$RUN")/infra.env}

ALL_COMPONENTS=(postgres kafka nats nacos jaeger)

# ---- versions ---------------------------------------------------------------
KAFKA_VERSION=${KAFKA_VERSION:-3.9.1}
KAFKA_SCALA=2.13
SLF4J_BINDING_VERSION=1.7.36
NATS_VERSION=${NATS_VERSION:-v2.12.3}
RNACOS_VERSION=${RNACOS_VERSION:-0.8.8}
JAEGER_VERSION=v1.76.0 # pinned by deploy/infra/jaeger/go.mod

# ---- ports ------------------------------------------------------------------
PG_PORT=${PG_PORT:-55432}
KAFKA_PORT=${KAFKA_PORT:-19092}
KAFKA_CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-$((KAFKA_PORT + 1))}
NATS_PORT=${NATS_PORT:-14222}
NATS_MONITOR_PORT=${NATS_MONITOR_PORT:-18222}
NACOS_PORT=${NACOS_PORT:-18848}
NACOS_GRPC_PORT=$((NACOS_PORT + 1000)) # fixed by the Nacos 2.x SDK convention
NACOS_CONSOLE_PORT=${NACOS_CONSOLE_PORT:-$((NACOS_PORT + 2000))}
JAEGER_OTLP_GRPC_PORT=${JAEGER_OTLP_GRPC_PORT:-4317}
JAEGER_OTLP_HTTP_PORT=${JAEGER_OTLP_HTTP_PORT:-4318}
JAEGER_UI_PORT=${JAEGER_UI_PORT:-16686}
JAEGER_QUERY_GRPC_PORT=${JAEGER_QUERY_GRPC_PORT:-16685}
JAEGER_HEALTH_PORT=${JAEGER_HEALTH_PORT:-13133}

NACOS_IMPL=${NACOS_IMPL:-rnacos}
READY_TIMEOUT=${READY_TIMEOUT:-120} # seconds per component

# ---- helpers ----------------------------------------------------------------
log() { printf '[infra] %s\n' "$*" >&2; }
die() { printf '[infra] ERROR: %s\n' "$*" >&2; exit 1; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.1fs", b-a}'; }

is_component() {
	local c
	for c in "${ALL_COMPONENTS[@]}"; do [[ $c == "$1" ]] && return 0; done
	return 1
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

pid_alive() { [[ -n ${1:-} ]] && kill -0 "$1" 2>/dev/null; }

pidfile() { echo "$RUN/$1/pid"; }

# read_pid <component>: pid from the pid file, only if that process is still ours
# (guards against pid reuse after a reboot or a stale pid file).
read_pid() {
	local f pid marker
	f=$(pidfile "$1")
	[[ -s $f ]] || return 0
	pid=$(cat "$f")
	case $1 in
	kafka) marker=kafka.Kafka ;;
	nats) marker=nats-server ;;
	nacos) marker=rnacos ;;
	jaeger) marker=jaeger ;;
	*) marker= ;;
	esac
	if [[ -n $marker && -r /proc/$pid/cmdline ]] && ! tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$marker"; then
		return 0
	fi
	echo "$pid"
}

comp_log() {
	case $1 in
	postgres) echo "$(pg_dir)/postgres.log" ;;
	*) echo "$RUN/$1/$1.log" ;;
	esac
}

show_log() {
	local f
	f=$(comp_log "$1")
	if [[ -f $f ]]; then
		printf '[infra] ---- last 50 lines of %s ----\n' "$f" >&2
		tail -n 50 "$f" >&2 || true
		printf '[infra] ---- end of log ----\n' >&2
	else
		log "no log file at $f"
	fi
}

# wait_for <component> <pid-or-empty> <check-function> [args...]
# Polls the check until it succeeds; fails early if the process died.
wait_for() {
	local comp=$1 pid=$2
	shift 2
	local deadline=$((SECONDS + READY_TIMEOUT))
	while ((SECONDS < deadline)); do
		if "$@" >/dev/null 2>&1; then return 0; fi
		if [[ -n $pid ]] && ! pid_alive "$pid"; then
			log "$comp: process $pid exited before becoming ready"
			show_log "$comp"
			return 1
		fi
		sleep 0.5
	done
	log "$comp: not ready after ${READY_TIMEOUT}s"
	show_log "$comp"
	return 1
}

# launch <component> <cmd...>: start detached in its own session, log + pid file.
launch() {
	local comp=$1
	shift
	local dir="$RUN/$comp" lf
	lf=$(comp_log "$comp")
	mkdir -p "$dir"
	[[ -f $lf ]] && mv -f "$lf" "$lf.prev"
	setsid nohup "$@" >"$lf" 2>&1 </dev/null &
	echo $! >"$(pidfile "$comp")"
}

# term_wait <component> <pid>: SIGTERM, wait up to STOP_TIMEOUT, then SIGKILL.
term_wait() {
	local comp=$1 pid=$2 t=${STOP_TIMEOUT:-20}
	pid_alive "$pid" || return 0
	kill -TERM "$pid" 2>/dev/null || true
	local deadline=$((SECONDS + t))
	while pid_alive "$pid" && ((SECONDS < deadline)); do sleep 0.2; done
	if pid_alive "$pid"; then
		log "$comp: pid $pid ignored SIGTERM for ${t}s, sending SIGKILL"
		kill -KILL "$pid" 2>/dev/null || true
		while pid_alive "$pid"; do sleep 0.1; done
	fi
}

http_code() { curl -s -o /dev/null -w '%{http_code}' --max-time 3 "$1" || true; }
http_ok() { [[ $(http_code "$1") == 200 ]]; }

need_cmd() { command -v "$1" >/dev/null 2>&1 || die "$1 is required but not installed${2:+ ($2)}"; }

# ---- authentication (INFRA_AUTH=1) ------------------------------------------
# auth_on: whether servers start with authentication. INFRA_AUTH=1 turns it on and records it in the
# infra dir ($RUN/auth), so that a later start/restart of that dir (outage tests) keeps it; INFRA_AUTH=0
# turns it off for this run; unset follows the record.
auth_on() {
	case ${INFRA_AUTH:-} in
	1)
		mkdir -p "$RUN"
		touch "$RUN/auth"
		return 0
		;;
	"") [[ -f $RUN/auth ]] ;;
	*) return 1 ;;
	esac
}

# infra_secret <name>: the password <name>, generated (crypto-random, 64 hex digits) into
# $RUN/secrets/<name> (0600, dir 0700) the first time and read back afterwards.
infra_secret() {
	local dir="$RUN/secrets" f
	f="$dir/$1"
	if [[ ! -s $f ]]; then
		mkdir -p "$dir"
		chmod 700 "$dir"
		(
			umask 077
			head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$f.tmp.$$"
		)
		mv -f "$f.tmp.$$" "$f"
	fi
	cat "$f"
}

APT_UPDATED=0
apt_install() {
	[[ $(id -u) == 0 ]] || die "need root to apt-get install $*"
	if ((APT_UPDATED == 0)); then
		log "apt-get update"
		DEBIAN_FRONTEND=noninteractive apt-get update -qq
		APT_UPDATED=1
	fi
	log "apt-get install $*"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# ============================================================================
# PostgreSQL
# ============================================================================
pg_bin() {
	local d
	for d in /usr/lib/postgresql/*/bin; do if [[ -d $d ]]; then echo "$d"; fi; done | sort -V | tail -n1
}

# Postgres refuses to run as root, so as root we run it as the `postgres` OS user.
# Its data dir must be reachable by that user; if $RUN is not (e.g. under /root),
# use /var/lib/postgresql/shopmesh-<hash of $RUN>.
pg_dir() {
	if [[ -n ${PG_DIR:-} ]]; then
		echo "$PG_DIR"
		return
	fi
	local d="$RUN/postgres"
	if [[ $(id -u) == 0 ]] && id postgres >/dev/null 2>&1; then
		mkdir -p "$d"
		if ! runuser -u postgres -- test -x "$d" 2>/dev/null; then
			d="/var/lib/postgresql/shopmesh-$(printf '%s' "$RUN" | cksum | cut -d' ' -f1)"
		fi
	fi
	PG_DIR=$d
	echo "$d"
}

as_pg() {
	if [[ $(id -u) == 0 ]]; then
		runuser -u postgres -- "$@"
	else
		"$@"
	fi
}

install_postgres() {
	if [[ -z $(pg_bin) || ! -x $(pg_bin)/initdb ]]; then
		apt_install postgresql
	fi
	need_cmd psql "apt-get install postgresql-client"
}

pg_running() { [[ -x $(pg_bin)/pg_ctl ]] && as_pg "$(pg_bin)/pg_ctl" -D "$(pg_dir)/data" status >/dev/null 2>&1; }

pg_ready() {
	PGPASSWORD=shopmesh psql -X -q -h 127.0.0.1 -p "$PG_PORT" -U shopmesh -d shopmesh -tAc 'select 1' 2>/dev/null | grep -qx 1
}

pg_admin() { as_pg "$(pg_bin)/psql" -X -q -v ON_ERROR_STOP=1 -h "$(pg_dir)" -p "$PG_PORT" -U postgres -d postgres "$@"; }

start_postgres() {
	local dir bin
	dir=$(pg_dir)
	bin=$(pg_bin)
	if pg_running && pg_ready; then
		log "postgres: already running"
		return 0
	fi
	mkdir -p "$dir"
	[[ $(id -u) == 0 ]] && chown postgres:postgres "$dir"
	if [[ ! -s $dir/data/PG_VERSION ]]; then
		log "postgres: initdb $dir/data"
		as_pg "$bin/initdb" -D "$dir/data" -U postgres -E UTF8 --locale=C.UTF-8 \
			--auth-local=trust --auth-host=scram-sha-256 >"$dir/initdb.log" 2>&1 ||
			{ tail -n 50 "$dir/initdb.log" >&2; die "postgres: initdb failed"; }
	fi
	if ! pg_running; then
		local lf="$dir/postgres.log"
		[[ -f $lf ]] && mv -f "$lf" "$lf.prev"
		# pg_ctl start -w itself polls until the server accepts connections.
		as_pg "$bin/pg_ctl" -D "$dir/data" -l "$lf" -w -t "$READY_TIMEOUT" \
			-o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $dir -c max_connections=${PG_MAX_CONNECTIONS:-200} -c shared_preload_libraries=pg_stat_statements" \
			start >/dev/null || {
			show_log postgres
			die "postgres: pg_ctl start failed"
		}
	fi
	wait_for postgres "" pg_admin -tAc 'select 1' || die "postgres: not accepting admin connections"
	# role + databases (idempotent)
	pg_admin <<-'SQL' >/dev/null
		DO $$BEGIN
		  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'shopmesh') THEN
		    CREATE ROLE shopmesh LOGIN PASSWORD 'shopmesh' CREATEDB;
		  END IF;
		END$$;
	SQL
	local db
	for db in shopmesh order_svc inventory_svc payment_svc; do
		if [[ $(pg_admin -tAc "select 1 from pg_database where datname='$db'") != 1 ]]; then
			pg_admin -c "CREATE DATABASE $db OWNER shopmesh" >/dev/null
		fi
	done
	# Per-statement counts and times for `make bench` (statements per order, where PostgreSQL's time
	# goes); the view lives in the shopmesh database and covers every database.
	pg_admin -d shopmesh -c "CREATE EXTENSION IF NOT EXISTS pg_stat_statements; GRANT pg_read_all_stats TO shopmesh" >/dev/null ||
		log "postgres: pg_stat_statements unavailable (make bench reports no per-statement figures)"
	wait_for postgres "" pg_ready || die "postgres: shopmesh login failed"
}

stop_postgres() {
	local bin dir pid
	bin=$(pg_bin)
	dir=$(pg_dir)
	[[ -s $dir/data/postmaster.pid ]] || return 0
	if pg_running; then
		as_pg "$bin/pg_ctl" -D "$dir/data" -m fast -w -t "${STOP_TIMEOUT:-20}" stop >/dev/null 2>&1 || true
	fi
	pid=$(head -n1 "$dir/data/postmaster.pid" 2>/dev/null || true)
	[[ -n $pid ]] && term_wait postgres "$pid"
	return 0
}

status_postgres() {
	if pg_running; then
		local pid
		pid=$(head -n1 "$(pg_dir)/data/postmaster.pid" 2>/dev/null || true)
		if pg_ready; then echo "up    pid=$pid 127.0.0.1:$PG_PORT ($(pg_bin | awk -F/ '{print "v"$5}'))"; else echo "running pid=$pid but NOT READY"; fi
	else
		echo "down"
	fi
}

env_postgres() {
	echo "export DATABASE_URL=postgres://shopmesh:shopmesh@127.0.0.1:$PG_PORT/shopmesh?sslmode=disable"
	echo "export PG_PORT=$PG_PORT"
}

purge_postgres() { rm -rf "$(pg_dir)"; }

# ============================================================================
# Kafka (KRaft combined broker+controller)
# ============================================================================
KAFKA_HOME="$CACHE/kafka-$KAFKA_VERSION"
KAFKA_CLUSTER_ID=${KAFKA_CLUSTER_ID:-c2hvcG1lc2gtaW5mcmEwMQ} # fixed base64 (22 chars)

install_kafka() {
	need_cmd java "apt-get install openjdk-17-jre-headless"
	if [[ ! -f $KAFKA_HOME/.complete ]]; then
		need_cmd mvn "apt-get install maven"
		mkdir -p "$KAFKA_HOME"
		cat >"$KAFKA_HOME/pom.xml" <<-EOF
			<project xmlns="http://maven.apache.org/POM/4.0.0">
			  <modelVersion>4.0.0</modelVersion>
			  <groupId>shopmesh.infra</groupId>
			  <artifactId>kafka-runtime</artifactId>
			  <version>1</version>
			  <packaging>pom</packaging>
			  <dependencies>
			    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_$KAFKA_SCALA</artifactId><version>$KAFKA_VERSION</version></dependency>
			    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-reload4j</artifactId><version>$SLF4J_BINDING_VERSION</version></dependency>
			  </dependencies>
			</project>
		EOF
		log "kafka: resolving kafka_$KAFKA_SCALA:$KAFKA_VERSION from Maven Central"
		rm -rf "$KAFKA_HOME/libs"
		(cd "$KAFKA_HOME" && mvn -B -Dstyle.color=never dependency:copy-dependencies \
			-DoutputDirectory=libs -DincludeScope=runtime >"$KAFKA_HOME/mvn.log" 2>&1) ||
			{ tail -n 50 "$KAFKA_HOME/mvn.log" >&2; die "kafka: maven resolution failed"; }
		touch "$KAFKA_HOME/.complete"
	fi
	# Admin-client readiness probe (compiled again when its source changed, runs against kafka-clients in libs/).
	if [[ ! -f $KAFKA_HOME/probe/KafkaProbe.class ]] || ! cmp -s "$SCRIPT_DIR/KafkaProbe.java" "$KAFKA_HOME/probe/KafkaProbe.java"; then
		mkdir -p "$KAFKA_HOME/probe"
		cp "$SCRIPT_DIR/KafkaProbe.java" "$KAFKA_HOME/probe/"
		javac -nowarn -cp "$KAFKA_HOME/libs/*" -d "$KAFKA_HOME/probe" "$KAFKA_HOME/probe/KafkaProbe.java" ||
			die "kafka: compiling probe failed"
	fi
}

kafka_java() { java -cp "$KAFKA_HOME/libs/*" "$@"; }

# With authentication (auth_on, recorded as $RUN/kafka/auth) the client listener is SASL_PLAINTEXT with
# SCRAM-SHA-512 only, the controller listener SASL_PLAINTEXT with PLAIN (KRaft cannot use SCRAM there:
# the credentials live in the metadata the controller serves), and StandardAuthorizer refuses whatever
# no ACL allows (allow.everyone.if.no.acl.found=false). `admin` (super user; tests and tools such as dlq)
# gets its SCRAM credential when the storage is formatted; each service that uses Kafka (kafka: true in
# services/*/service.yaml) gets its own user and the ACLs its service.yaml lists (kafka_writes,
# kafka_reads, kafka_groups), written by deploy/cmd/kafkaacl after the broker started. Passwords:
# infra_secret kafka-admin, kafka-<service>.
kafka_auth() { [[ -f $RUN/kafka/auth ]]; }

# kafka_services: the services with kafka: true in services/*/service.yaml.
kafka_services() {
	local f
	for f in "$REPO"/services/*/service.yaml; do
		if grep -q '^kafka: *true' "$f"; then basename "$(dirname "$f")"; fi
	done
}

# kafka_auth_config: the server.properties lines of authentication and authorization.
kafka_auth_config() {
	local pw
	pw=$(infra_secret kafka-admin)
	cat <<-EOF
		sasl.enabled.mechanisms=SCRAM-SHA-512
		sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
		listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$pw";
		sasl.mechanism.controller.protocol=PLAIN
		listener.name.controller.sasl.enabled.mechanisms=PLAIN
		listener.name.controller.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="$pw" user_admin="$pw";
		authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
		allow.everyone.if.no.acl.found=false
		super.users=User:admin
	EOF
}

kafka_write_config() {
	local dir="$RUN/kafka" l=PLAINTEXT c=PLAINTEXT
	if kafka_auth; then l=SASL_PLAINTEXT c=SASL_PLAINTEXT; fi
	mkdir -p "$dir/data"
	# 0600: with authentication it holds the admin password.
	(umask 077 && rm -f "$dir/server.properties" && touch "$dir/server.properties")
	cat >"$dir/server.properties" <<-EOF
		process.roles=broker,controller
		node.id=1
		controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
		listeners=$l://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
		advertised.listeners=$l://127.0.0.1:$KAFKA_PORT
		controller.listener.names=CONTROLLER
		inter.broker.listener.name=$l
		listener.security.protocol.map=CONTROLLER:$c,$l:$l
		log.dirs=$dir/data
		num.partitions=3
		default.replication.factor=1
		min.insync.replicas=1
		offsets.topic.replication.factor=1
		offsets.topic.num.partitions=${KAFKA_OFFSETS_PARTITIONS:-10}
		transaction.state.log.replication.factor=1
		transaction.state.log.min.isr=1
		group.initial.rebalance.delay.ms=0
		auto.create.topics.enable=true
		delete.topic.enable=true
		log.retention.hours=24
		log.segment.bytes=67108864
	EOF
	if kafka_auth; then kafka_auth_config >>"$dir/server.properties"; fi
	cat >"$dir/log4j.properties" <<-'EOF'
		log4j.rootLogger=INFO, stdout
		log4j.appender.stdout=org.apache.log4j.ConsoleAppender
		log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
		log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
		log4j.logger.kafka=INFO
		log4j.logger.org.apache.kafka=INFO
		log4j.logger.org.apache.kafka.clients=WARN
		log4j.logger.kafka.request.logger=WARN
		log4j.logger.state.change.logger=WARN
		log4j.logger.kafka.log.LogCleaner=WARN
	EOF
}

# kafka_probe: KafkaProbe as admin (its credential in the environment, not on the command line).
kafka_probe() {
	local user="" pw=""
	if kafka_auth; then user=admin pw=$(infra_secret kafka-admin); fi
	KAFKA_PROBE_USERNAME=$user KAFKA_PROBE_PASSWORD=$pw \
		java -cp "$KAFKA_HOME/probe:$KAFKA_HOME/libs/*" -Dlog4j.configuration=file:"$RUN/kafka/log4j-quiet.properties" \
		KafkaProbe "127.0.0.1:$KAFKA_PORT" 2>&1
}

# kafka_acl: a user and ACLs per service (deploy/cmd/kafkaacl), passwords drawn on first use.
kafka_acl() {
	need_cmd go "https://go.dev/dl"
	local s
	for s in $(kafka_services); do infra_secret "kafka-$s" >/dev/null; done
	(cd "$REPO/deploy" && go run ./cmd/kafkaacl -brokers "127.0.0.1:$KAFKA_PORT" -secrets "$RUN/secrets" -root "$REPO") >&2 ||
		die "kafka: creating the service users and ACLs failed"
}

kafka_started() { port_open "$KAFKA_PORT" && grep -q 'Kafka Server started' "$(comp_log kafka)"; }

start_kafka() {
	local dir="$RUN/kafka" pid
	pid=$(read_pid kafka)
	if pid_alive "$pid"; then
		log "kafka: already running (pid $pid)"
		wait_for kafka "$pid" kafka_started || die "kafka: running but not ready"
		return 0
	fi
	port_open "$KAFKA_PORT" && die "kafka: port $KAFKA_PORT is in use by another process"
	rm -f "$dir/auth"
	if auth_on; then
		# The admin credential is written when the storage is formatted: a store formatted without it
		# cannot start with authentication.
		if [[ -f $dir/data/meta.properties && ! -f $dir/scram ]]; then
			die "kafka: $dir/data was formatted without authentication; purge it first (infra.sh down --purge)"
		fi
		mkdir -p "$dir"
		touch "$dir/auth"
	fi
	kafka_write_config
	printf 'log4j.rootLogger=ERROR, stderr\nlog4j.appender.stderr=org.apache.log4j.ConsoleAppender\nlog4j.appender.stderr.Target=System.err\nlog4j.appender.stderr.layout=org.apache.log4j.PatternLayout\nlog4j.appender.stderr.layout.ConversionPattern=%%p %%m%%n\n' >"$dir/log4j-quiet.properties"
	if [[ ! -f $dir/data/meta.properties ]]; then
		log "kafka: formatting storage (cluster id $KAFKA_CLUSTER_ID)"
		local scram=()
		if kafka_auth; then scram=(--add-scram "SCRAM-SHA-512=[name=admin,password=$(infra_secret kafka-admin)]"); fi
		kafka_java -Dlog4j.configuration=file:"$dir/log4j-quiet.properties" kafka.tools.StorageTool format \
			-t "$KAFKA_CLUSTER_ID" -c "$dir/server.properties" "${scram[@]}" >"$dir/format.log" 2>&1 ||
			{ tail -n 50 "$dir/format.log" >&2; die "kafka: storage format failed"; }
		if kafka_auth; then touch "$dir/scram"; fi
	fi
	launch kafka java -Xms512m -Xmx512m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
		-Dlog4j.configuration=file:"$dir/log4j.properties" -Dkafka.logs.dir="$dir" \
		-cp "$KAFKA_HOME/libs/*" kafka.Kafka "$dir/server.properties"
	pid=$(read_pid kafka)
	wait_for kafka "$pid" kafka_started || die "kafka: did not start"
	# Real client round trip: describeCluster + create/describe a probe topic.
	local out
	if ! out=$(kafka_probe); then
		printf '%s\n' "$out" >&2
		show_log kafka
		die "kafka: admin-client probe failed"
	fi
	if kafka_auth; then kafka_acl; fi
}

stop_kafka() { term_wait kafka "$(read_pid kafka)"; rm -f "$(pidfile kafka)"; }

status_kafka() {
	local pid
	pid=$(read_pid kafka)
	if pid_alive "$pid"; then
		if port_open "$KAFKA_PORT"; then echo "up    pid=$pid 127.0.0.1:$KAFKA_PORT (controller :$KAFKA_CONTROLLER_PORT) kafka_$KAFKA_SCALA-$KAFKA_VERSION KRaft$(kafka_auth && echo ", SASL/SCRAM+ACLs")"; else echo "running pid=$pid but port $KAFKA_PORT closed"; fi
	else
		echo "down"
	fi
}

env_kafka() {
	echo "export KAFKA_BROKERS=127.0.0.1:$KAFKA_PORT"
	kafka_auth || return 0
	local s p
	# One variable a line: the Makefile includes this file, and make reads `export A=1 B=2` as A.
	echo "export KAFKA_USERNAME=admin"
	echo "export KAFKA_PASSWORD=$(infra_secret kafka-admin)"
	for s in $(kafka_services); do
		p=$(tr '[:lower:]-' '[:upper:]_' <<<"$s")
		echo "export ${p}_KAFKA_USERNAME=$s"
		echo "export ${p}_KAFKA_PASSWORD=$(infra_secret "kafka-$s")"
	done
}

purge_kafka() { rm -rf "$RUN/kafka"; }

# ============================================================================
# NATS (JetStream)
# ============================================================================
NATS_BIN="$CACHE/bin/nats-server-$NATS_VERSION"

install_nats() {
	[[ -x $NATS_BIN ]] && return 0
	need_cmd go
	log "nats: building nats-server $NATS_VERSION with go install"
	local tmp="$CACHE/tmp-nats-$$"
	mkdir -p "$tmp"
	(cd "$tmp" && GOWORK=off GOFLAGS='' GOBIN="$tmp" go install "github.com/nats-io/nats-server/v2@$NATS_VERSION") ||
		die "nats: go install failed"
	mkdir -p "$CACHE/bin"
	mv -f "$tmp/nats-server" "$NATS_BIN"
	rm -rf "$tmp"
}

# With authentication (auth_on) each service that uses NATS (nats: true in services/*/service.yaml)
# has its own user, allowed to publish only its own event subjects and the JetStream API requests for
# its own stream, to subscribe to its own subjects and to _INBOX.> (request replies, JetStream publish
# acks); `admin` (tests, tools such as dlq) may do everything. Connections without a user are refused
# (no no_auth_user). The subjects and the stream are the service's nats_subjects and nats_stream in
# its service.yaml (the one list: compose's and the dev overlay's nats.conf get the same permissions
# from servicegen); deploy/cmd/natsauth prints the block.
nats_services() {
	local f
	for f in "$REPO"/services/*/service.yaml; do
		grep -q '^nats: *true' "$f" && sed -n 's/^name: *//p' "$f"
	done
	return 0
}

# nats_authorization: the authorization block (passwords from infra_secret, drawn on first use).
nats_authorization() {
	need_cmd go "https://go.dev/dl"
	local u
	infra_secret nats-admin >/dev/null
	for u in $(nats_services); do infra_secret "nats-$u" >/dev/null; done
	(cd "$REPO/deploy" && go run ./cmd/natsauth -secrets "$RUN/secrets" -root "$REPO") ||
		die "nats: writing the users and permissions failed"
}

# /healthz answers {"status":"ok"} once JetStream is up; check the body, not just 200.
nats_ready() { curl -sf --max-time 3 "http://127.0.0.1:$NATS_MONITOR_PORT/healthz" | grep -q '"status": *"ok"'; }

start_nats() {
	local dir="$RUN/nats" pid
	pid=$(read_pid nats)
	if pid_alive "$pid"; then
		log "nats: already running (pid $pid)"
		wait_for nats "$pid" nats_ready || die "nats: running but not ready"
		return 0
	fi
	local p
	for p in "$NATS_PORT" "$NATS_MONITOR_PORT"; do
		port_open "$p" && die "nats: port $p is in use by another process"
	done
	mkdir -p "$dir"
	cat >"$dir/nats.conf" <<-EOF
		server_name: shopmesh-nats
		listen: 127.0.0.1:$NATS_PORT
		http: 127.0.0.1:$NATS_MONITOR_PORT
		max_payload: 8MB
		jetstream {
		  store_dir: "$dir"
		  sync_interval: always
		  max_memory_store: 512MB
		  max_file_store: 4GB
		}
	EOF
	rm -f "$dir/auth"
	if auth_on; then
		(
			umask 077
			nats_authorization >"$dir/auth.conf"
		) || die "nats: no authorization block"
		echo 'include "auth.conf"' >>"$dir/nats.conf"
		touch "$dir/auth"
	fi
	launch nats "$NATS_BIN" -c "$dir/nats.conf"
	pid=$(read_pid nats)
	wait_for nats "$pid" nats_ready || die "nats: not ready"
	curl -sf --max-time 3 "http://127.0.0.1:$NATS_MONITOR_PORT/jsz" | grep -q '"store_dir"' || die "nats: JetStream not enabled"
}

stop_nats() { term_wait nats "$(read_pid nats)"; rm -f "$(pidfile nats)"; }

status_nats() {
	local pid
	pid=$(read_pid nats)
	if pid_alive "$pid"; then
		if nats_ready; then echo "up    pid=$pid 127.0.0.1:$NATS_PORT (monitor :$NATS_MONITOR_PORT) nats-server $NATS_VERSION JetStream$([[ -f $RUN/nats/auth ]] && echo ", users+permissions")"; else echo "running pid=$pid but NOT READY"; fi
	else
		echo "down"
	fi
}

env_nats() {
	echo "export NATS_URL=nats://127.0.0.1:$NATS_PORT"
	[[ -f $RUN/nats/auth ]] || return 0
	local u p
	# One variable a line: the Makefile includes this file, and make reads `export A=1 B=2` as A.
	echo "export NATS_USER=admin"
	echo "export NATS_PASSWORD=$(infra_secret nats-admin)"
	for u in $(nats_services); do
		p=$(tr '[:lower:]' '[:upper:]' <<<"$u")
		echo "export ${p}_NATS_USER=$u"
		echo "export ${p}_NATS_PASSWORD=$(infra_secret "nats-$u")"
	done
}

purge_nats() { rm -rf "$RUN/nats"; }

# ============================================================================
# Nacos (NACOS_IMPL=rnacos: Rust Nacos-2.x-protocol server from crates.io)
# ============================================================================
RNACOS_ROOT="$CACHE/rnacos-$RNACOS_VERSION"
RNACOS_BIN="$RNACOS_ROOT/bin/rnacos"

install_nacos() {
	case $NACOS_IMPL in
	rnacos) ;;
	java)
		# com.alibaba.nacos:nacos-console (the server) is not published to Maven Central —
		# only nacos-client/api/common are — so there is nothing to fetch. See README.md.
		die "nacos: NACOS_IMPL=java is unavailable: the Nacos server jars are not on Maven Central; use NACOS_IMPL=rnacos"
		;;
	*) die "nacos: unknown NACOS_IMPL=$NACOS_IMPL (expected rnacos)" ;;
	esac
	[[ -x $RNACOS_BIN ]] && return 0
	need_cmd cargo
	log "nacos: cargo install rnacos $RNACOS_VERSION (several minutes, once)"
	# A test server, not a production one: build without optimisation or debuginfo (but
	# with release semantics) — several times faster to compile on 2 cores.
	CARGO_PROFILE_RELEASE_OPT_LEVEL=${RNACOS_OPT_LEVEL:-0} CARGO_PROFILE_RELEASE_DEBUG=false \
		CARGO_PROFILE_RELEASE_DEBUG_ASSERTIONS=false CARGO_PROFILE_RELEASE_OVERFLOW_CHECKS=false \
		CARGO_PROFILE_RELEASE_INCREMENTAL=false \
		cargo install rnacos --version "$RNACOS_VERSION" --locked --root "$RNACOS_ROOT" >"$CACHE/rnacos-install.log" 2>&1 ||
		{ tail -n 50 "$CACHE/rnacos-install.log" >&2; die "nacos: cargo install rnacos failed"; }
}

nacos_base() { echo "http://127.0.0.1:$NACOS_PORT/nacos"; }

# With authentication (auth_on, recorded as $RUN/nacos/auth) rnacos refuses every open-API and SDK
# request without the accessToken of a logged-in user: RNACOS_ENABLE_OPEN_API_AUTH=true, and the
# admin user it creates in an empty data dir gets the generated password (infra_secret nacos-admin)
# instead of "admin". Clients log in with NACOS_USERNAME/NACOS_PASSWORD (services:
# <P>_REGISTRY_NACOS_USERNAME/_PASSWORD).
nacos_auth() { [[ -f $RUN/nacos/auth ]]; }

# nacos_q: the query suffix authenticating an open-API request ("" without authentication). The
# password goes to curl from its file, never on a command line.
nacos_q() {
	nacos_auth || return 0
	local tok
	tok=$(curl -sf --max-time 3 -X POST "$(nacos_base)/v1/auth/login" --data-urlencode username=admin \
		--data-urlencode "password@$RUN/secrets/nacos-admin" | sed -n 's/.*"accessToken":"\([^"]*\)".*/\1/p') || return 1
	[[ -n $tok ]] || return 1
	echo "&accessToken=$tok"
}

# Readiness: the gRPC port (rnacos keeps serving HTTP after its gRPC listener failed to bind, e.g. on
# a port a client connection holds) + console readiness endpoint + an open-API
# register/list/deregister round trip.
nacos_ready() {
	local b q
	b=$(nacos_base)
	port_open "$NACOS_GRPC_PORT" || return 1
	q=$(nacos_q) || return 1
	http_ok "$b/v1/console/health/readiness?probe=1$q" || return 1
	curl -sf --max-time 3 -X POST "$b/v1/ns/instance?serviceName=infra-probe&ip=127.0.0.1&port=1&ephemeral=false$q" | grep -qi ok || return 1
	curl -sf --max-time 3 "$b/v1/ns/instance/list?serviceName=infra-probe$q" | grep -q '"ip":"127.0.0.1"' || return 1
	curl -sf --max-time 3 -X DELETE "$b/v1/ns/instance?serviceName=infra-probe&ip=127.0.0.1&port=1&ephemeral=false$q" >/dev/null || true
	return 0
}

nacos_up() {
	local q
	port_open "$NACOS_GRPC_PORT" || return 1
	q=$(nacos_q) || return 1
	http_ok "$(nacos_base)/v1/console/health/readiness?probe=1$q"
}

start_nacos() {
	local dir="$RUN/nacos" pid
	pid=$(read_pid nacos)
	if pid_alive "$pid"; then
		log "nacos: already running (pid $pid)"
		wait_for nacos "$pid" nacos_up || die "nacos: running but not ready"
		return 0
	fi
	local p
	for p in "$NACOS_PORT" "$NACOS_GRPC_PORT"; do
		port_open "$p" && die "nacos: port $p is in use by another process"
	done
	mkdir -p "$dir/data"
	rm -f "$dir/auth"
	local auth=false admin_password=admin
	if auth_on; then
		auth=true admin_password=$(infra_secret nacos-admin)
	fi
	# rnacos loads ./.env when no env file is given; always give it ours (0600: it holds the password).
	(
		umask 077
		cat >"$dir/rnacos.env" <<-EOF
			RNACOS_HTTP_PORT=$NACOS_PORT
			RNACOS_GRPC_PORT=$NACOS_GRPC_PORT
			RNACOS_HTTP_CONSOLE_PORT=$NACOS_CONSOLE_PORT
			RNACOS_SDK_HOST=127.0.0.1
			RNACOS_CONSOLE_HOST=127.0.0.1
			RNACOS_DATA_DIR=$dir/data
			RNACOS_RAFT_NODE_ADDR=127.0.0.1:$NACOS_GRPC_PORT
			RNACOS_ENABLE_OPEN_API_AUTH=$auth
			RNACOS_INIT_ADMIN_USERNAME=admin
			RNACOS_INIT_ADMIN_PASSWORD=$admin_password
			RUST_LOG=${RNACOS_LOG:-info}
		EOF
	)
	if [[ $auth == true ]]; then touch "$dir/auth"; fi
	# rnacos 0.8.8 sometimes panics applying its first raft entry in an empty data dir
	# (raftapply.rs:421, Option::unwrap on None: an actor gets a request before its managers are
	# set): the admin user is then never created and, with auth, every login is 403. A data dir that
	# has never been ready ($dir/data-unready, or empty) holds nothing of value: on that panic start
	# once more on a fresh one. A data dir that was ready once is never deleted.
	[[ -n $(ls -A "$dir/data") ]] || touch "$dir/data-unready"
	nacos_launch "$dir"
	if [[ -f $dir/data-unready ]]; then
		if wait_for nacos "$(read_pid nacos)" nacos_ready_or_panicked && ! nacos_panicked; then
			rm -f "$dir/data-unready"
			return 0
		fi
		nacos_panicked || die "nacos: not ready"
		log "nacos: rnacos panicked during its first start in an empty data dir (upstream race, raftapply.rs); starting it once more on a fresh data dir"
		stop_nacos
		rm -rf "$dir/data"
		mkdir -p "$dir/data"
		nacos_launch "$dir"
	fi
	wait_for nacos "$(read_pid nacos)" nacos_ready || die "nacos: not ready"
	rm -f "$dir/data-unready"
}

# nacos_launch <dir>: start rnacos with <dir>/rnacos.env from <dir>.
nacos_launch() {
	(
		cd "$1"
		set -a
		# shellcheck disable=SC1091
		. "$1/rnacos.env"
		set +a
		launch nacos "$RNACOS_BIN" -e "$1/rnacos.env"
	)
}

# nacos_panicked: the log of the current start shows rnacos's first-start panic (see start_nacos).
nacos_panicked() { grep -qs 'panicked at .*raftapply\.rs' "$(comp_log nacos)"; }

nacos_ready_or_panicked() { nacos_panicked || nacos_ready; }

stop_nacos() { term_wait nacos "$(read_pid nacos)"; rm -f "$(pidfile nacos)"; }

status_nacos() {
	local pid
	pid=$(read_pid nacos)
	if pid_alive "$pid"; then
		if nacos_up; then echo "up    pid=$pid 127.0.0.1:$NACOS_PORT (gRPC :$NACOS_GRPC_PORT, console :$NACOS_CONSOLE_PORT) rnacos $RNACOS_VERSION$(nacos_auth && echo ", auth")"; else echo "running pid=$pid but NOT READY"; fi
	else
		echo "down"
	fi
}

env_nacos() {
	echo "export NACOS_ADDR=127.0.0.1:$NACOS_PORT"
	if nacos_auth; then
		echo "export NACOS_USERNAME=admin"
		echo "export NACOS_PASSWORD=$(infra_secret nacos-admin)"
	fi
}

purge_nacos() { rm -rf "$RUN/nacos"; }

# ============================================================================
# Jaeger v2 all-in-one (built from deploy/infra/jaeger/go.mod, in-memory storage)
# ============================================================================
JAEGER_BIN="$CACHE/bin/jaeger-$JAEGER_VERSION"

install_jaeger() {
	[[ -x $JAEGER_BIN ]] && return 0
	need_cmd go
	log "jaeger: building $JAEGER_VERSION (~5 min, once)"
	mkdir -p "$CACHE/bin"
	(cd "$SCRIPT_DIR/jaeger" && GOWORK=off GOFLAGS=-buildvcs=false go build -o "$JAEGER_BIN.tmp" github.com/jaegertracing/jaeger/cmd/jaeger) ||
		die "jaeger: go build failed"
	mv -f "$JAEGER_BIN.tmp" "$JAEGER_BIN"
}

jaeger_ready() {
	http_ok "http://127.0.0.1:$JAEGER_HEALTH_PORT/status" &&
		curl -sf --max-time 3 "http://127.0.0.1:$JAEGER_UI_PORT/api/services" | grep -q '"data"'
}

start_jaeger() {
	local dir="$RUN/jaeger" pid
	pid=$(read_pid jaeger)
	if pid_alive "$pid"; then
		log "jaeger: already running (pid $pid)"
		wait_for jaeger "$pid" jaeger_ready || die "jaeger: running but not ready"
		return 0
	fi
	local p
	for p in "$JAEGER_OTLP_GRPC_PORT" "$JAEGER_OTLP_HTTP_PORT" "$JAEGER_UI_PORT"; do
		port_open "$p" && die "jaeger: port $p is in use by another process"
	done
	mkdir -p "$dir"
	# The built-in all-in-one config binds query/UI on all interfaces and opens a dozen
	# extra ports; this is the same pipeline, OTLP only, loopback only.
	cat >"$dir/jaeger.yaml" <<-EOF
		service:
		  extensions: [jaeger_storage, jaeger_query, healthcheckv2]
		  pipelines:
		    traces:
		      receivers: [otlp]
		      processors: [batch]
		      exporters: [jaeger_storage_exporter]
		  telemetry:
		    resource:
		      service.name: jaeger
		    metrics:
		      level: none
		    logs:
		      level: info
		extensions:
		  jaeger_query:
		    # self-tracing defaults to on and makes shutdown block ~10s flushing to :4317
		    enable_tracing: false
		    storage:
		      traces: memstore
		    http:
		      endpoint: 127.0.0.1:$JAEGER_UI_PORT
		    grpc:
		      endpoint: 127.0.0.1:$JAEGER_QUERY_GRPC_PORT
		  jaeger_storage:
		    backends:
		      memstore:
		        memory:
		          max_traces: ${JAEGER_MAX_TRACES:-100000}
		  healthcheckv2:
		    use_v2: true
		    http:
		      endpoint: 127.0.0.1:$JAEGER_HEALTH_PORT
		receivers:
		  otlp:
		    protocols:
		      grpc:
		        endpoint: 127.0.0.1:$JAEGER_OTLP_GRPC_PORT
		      http:
		        endpoint: 127.0.0.1:$JAEGER_OTLP_HTTP_PORT
		processors:
		  batch:
		exporters:
		  jaeger_storage_exporter:
		    trace_storage: memstore
	EOF
	launch jaeger "$JAEGER_BIN" --config "file:$dir/jaeger.yaml"
	pid=$(read_pid jaeger)
	wait_for jaeger "$pid" jaeger_ready || die "jaeger: not ready"
}

stop_jaeger() { term_wait jaeger "$(read_pid jaeger)"; rm -f "$(pidfile jaeger)"; }

status_jaeger() {
	local pid
	pid=$(read_pid jaeger)
	if pid_alive "$pid"; then
		if jaeger_ready; then echo "up    pid=$pid OTLP grpc 127.0.0.1:$JAEGER_OTLP_GRPC_PORT http :$JAEGER_OTLP_HTTP_PORT, UI :$JAEGER_UI_PORT jaeger $JAEGER_VERSION (memory)"; else echo "running pid=$pid but NOT READY"; fi
	else
		echo "down"
	fi
}

env_jaeger() {
	echo "export OTLP_ENDPOINT=127.0.0.1:$JAEGER_OTLP_GRPC_PORT"
	echo "export JAEGER_QUERY_URL=http://127.0.0.1:$JAEGER_UI_PORT"
}

purge_jaeger() { rm -rf "$RUN/jaeger"; }

# ============================================================================
# commands
# ============================================================================
comp_is_up() {
	case $1 in
	postgres) pg_running ;;
	*) pid_alive "$(read_pid "$1")" ;;
	esac
}

write_env() {
	local c any=0 tmp
	mkdir -p "$(dirname "$ENV_FILE")"
	tmp="$ENV_FILE.tmp.$$"
	(umask 077 && : >"$tmp") # 0600: with INFRA_AUTH=1 it holds passwords
	{
		echo "# generated by deploy/infra/infra.sh at $(date -u +%Y-%m-%dT%H:%M:%SZ); source it"
		for c in "${ALL_COMPONENTS[@]}"; do
			if comp_is_up "$c"; then
				"env_$c"
				any=1
			fi
		done
	} >"$tmp"
	if ((any)); then mv -f "$tmp" "$ENV_FILE"; else rm -f "$tmp" "$ENV_FILE"; fi
}

# resolve_components [names...]: sets COMPS (all components when none are named).
resolve_components() {
	local c
	if (($# == 0)); then
		COMPS=("${ALL_COMPONENTS[@]}")
		return
	fi
	for c in "$@"; do
		is_component "$c" || die "unknown component '$c' (known: ${ALL_COMPONENTS[*]})"
	done
	COMPS=("$@")
}

cmd_up() {
	local c t0 total
	resolve_components "$@"
	mkdir -p "$RUN" "$CACHE"
	total=$(now)
	for c in "${COMPS[@]}"; do
		t0=$(now)
		"install_$c"
		local ti
		ti=$(elapsed "$t0")
		t0=$(now)
		"start_$c"
		log "$(printf '%-9s ready  (install/check %s, start %s)' "$c" "$ti" "$(elapsed "$t0")")"
		write_env
	done
	log "all requested components ready in $(elapsed "$total"); env: $ENV_FILE"
}

cmd_install() {
	local c t0
	resolve_components "$@"
	mkdir -p "$CACHE"
	for c in "${COMPS[@]}"; do
		t0=$(now)
		"install_$c"
		log "$(printf '%-9s installed (%s)' "$c" "$(elapsed "$t0")")"
	done
}

cmd_stop() {
	local c
	resolve_components "$@"
	for c in "${COMPS[@]}"; do
		if comp_is_up "$c"; then
			log "stopping $c"
			"stop_$c"
		fi
	done
	write_env
}

# kill_comp <component>: crash it without a clean shutdown, wait until it is gone. PostgreSQL gets
# `pg_ctl stop -m immediate` (SIGQUIT to the postmaster: no checkpoint, crash recovery at the next
# start): a SIGKILLed postmaster leaves its backends holding the shared memory, which blocks a restart.
kill_comp() {
	local c=$1 pid
	case $c in
	postgres)
		pg_running || return 0
		pid=$(head -n1 "$(pg_dir)/data/postmaster.pid" 2>/dev/null || true)
		as_pg "$(pg_bin)/pg_ctl" -D "$(pg_dir)/data" -m immediate -w -t "${STOP_TIMEOUT:-20}" stop >/dev/null 2>&1 || true
		;;
	*)
		pid=$(read_pid "$c")
		pid_alive "$pid" || return 0
		kill -KILL "$pid" 2>/dev/null || true
		;;
	esac
	local deadline=$((SECONDS + ${STOP_TIMEOUT:-20}))
	while pid_alive "$pid" && ((SECONDS < deadline)); do sleep 0.1; done
	pid_alive "$pid" && die "$c: pid $pid still alive after kill"
	return 0
}

cmd_kill() {
	local c
	resolve_components "$@"
	for c in "${COMPS[@]}"; do
		if comp_is_up "$c"; then
			log "killing $c"
			kill_comp "$c"
		fi
	done
	write_env
}

cmd_down() {
	local purge=0 a
	for a in "$@"; do
		case $a in
		--purge) purge=1 ;;
		*) die "down: unknown argument $a" ;;
		esac
	done
	local c i
	# reverse order
	for ((i = ${#ALL_COMPONENTS[@]} - 1; i >= 0; i--)); do
		c=${ALL_COMPONENTS[$i]}
		if comp_is_up "$c"; then
			log "stopping $c"
			"stop_$c"
		fi
	done
	rm -f "$ENV_FILE"
	if ((purge)); then
		for c in "${ALL_COMPONENTS[@]}"; do "purge_$c"; done
		rm -rf "$RUN"
		log "purged $RUN"
	fi
}

cmd_status() {
	local c
	for c in "${ALL_COMPONENTS[@]}"; do
		printf '%-9s %s\n' "$c" "$("status_$c")"
	done
}

cmd_env() {
	[[ -f $ENV_FILE ]] || die "no $ENV_FILE (run: $0 up)"
	cat "$ENV_FILE"
}

usage() { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; }

main() {
	local cmd=${1:-}
	(($#)) && shift
	case $cmd in
	up | start) cmd_up "$@" ;;
	install) cmd_install "$@" ;;
	stop)
		(($#)) || die "stop: name at least one component (or use down)"
		cmd_stop "$@"
		;;
	kill)
		(($#)) || die "kill: name at least one component"
		cmd_kill "$@"
		;;
	restart)
		(($#)) || die "restart: name at least one component"
		cmd_stop "$@"
		cmd_up "$@"
		;;
	down) cmd_down "$@" ;;
	status) cmd_status ;;
	env) cmd_env ;;
	logs)
		if (($# != 1)) || ! is_component "$1"; then die "logs: name one component"; fi
		tail -n "${LINES_TAIL:-100}" "$(comp_log "$1")"
		;;
	-h | --help | help | "") usage ;;
	*)
		usage
		exit 2
		;;
	esac
}

main "$@"
