#!/usr/bin/env bash
# Entrypoint of the postgres stand-in: the official postgres image's docker-entrypoint.sh interface
# (https://hub.docker.com/_/postgres, "Environment Variables" and "Initialization scripts"), reduced to
# what a single-node server needs. Runs as root only to own PGDATA, then re-executes itself as postgres.
set -euo pipefail

log() { printf '%s [entrypoint] %s\n' "$(date -u +%FT%TZ)" "$*" >&2; }

# `docker run image -c fsync=off` → postgres -c fsync=off (as the official image does).
if [[ $# -eq 0 || ${1:0:1} == - ]]; then
	set -- postgres "$@"
fi
if [[ $1 != postgres ]]; then
	exec "$@"
fi

: "${PGDATA:=/var/lib/postgresql/data}"
if [[ $(id -u) == 0 ]]; then
	mkdir -p "$PGDATA" /var/run/postgresql
	chown postgres:postgres "$PGDATA" /var/run/postgresql
	chmod 0700 "$PGDATA"
	chmod 3777 /var/run/postgresql
	exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

export POSTGRES_USER=${POSTGRES_USER:-postgres}
export POSTGRES_DB=${POSTGRES_DB:-$POSTGRES_USER}
export PGUSER=$POSTGRES_USER PGPASSWORD=${PGPASSWORD:-${POSTGRES_PASSWORD:-}}
auth=${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}

run_initdb_d() {
	local f
	for f in /docker-entrypoint-initdb.d/*; do
		case $f in
		*.sh)
			if [[ -x $f ]]; then
				log "running $f"
				"$f"
			else
				log "sourcing $f"
				# shellcheck disable=SC1090
				. "$f"
			fi
			;;
		*.sql)
			log "running $f"
			psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password --no-psqlrc --dbname "$POSTGRES_DB" -f "$f"
			;;
		*.sql.gz)
			log "running $f"
			gunzip -c "$f" | psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password --no-psqlrc --dbname "$POSTGRES_DB"
			;;
		*/\*) ;; # empty folder
		*) log "ignoring $f" ;;
		esac
	done
}

if [[ ! -s $PGDATA/PG_VERSION ]]; then
	if [[ -z ${POSTGRES_PASSWORD:-} && $auth != trust ]]; then
		cat >&2 <<-'MSG'
			Error: Database is uninitialized and superuser password is not specified.
			       You must specify POSTGRES_PASSWORD to a non-empty value for the
			       superuser. For example, "-e POSTGRES_PASSWORD=password" on "docker run".
		MSG
		exit 1
	fi
	log "initialising $PGDATA (PostgreSQL $(postgres -V | awk '{print $3}'), user $POSTGRES_USER, database $POSTGRES_DB)"
	read -r -a initdb_args <<<"${POSTGRES_INITDB_ARGS:-}"
	initdb --username="$POSTGRES_USER" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") \
		--auth-local=trust --auth-host="$auth" "${initdb_args[@]}" -D "$PGDATA" >/dev/null
	printf "\nlisten_addresses = '*'\n" >>"$PGDATA/postgresql.conf"
	printf '\nhost all all all %s\n' "$auth" >>"$PGDATA/pg_hba.conf"

	# A temporary server on the Unix socket only: nothing outside the container sees a half-made
	# database (the compose healthcheck asks over TCP).
	pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -p ${PGPORT:-5432}" -w start >/dev/null
	if [[ $POSTGRES_DB != postgres ]]; then
		psql -v ON_ERROR_STOP=1 --no-password --no-psqlrc --dbname postgres \
			-v db="$POSTGRES_DB" <<<'CREATE DATABASE :"db";'
	fi
	run_initdb_d
	pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
	log "init done; starting PostgreSQL"
fi

exec "$@"
