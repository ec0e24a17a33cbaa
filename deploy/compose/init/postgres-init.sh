#!/bin/sh
# Runs once, on the first start of an empty data volume (docker-entrypoint-initdb.d): one database and
# one owner role per service, so no service can read another's tables.
set -eu
for svc in order inventory payment; do
	case "$svc" in
	order) pw="$ORDER_DB_PASSWORD" ;;
	inventory) pw="$INVENTORY_DB_PASSWORD" ;;
	payment) pw="$PAYMENT_DB_PASSWORD" ;;
	esac
	psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
		-v svc="$svc" -v pw="$pw" <<-'SQL'
		CREATE ROLE :"svc" LOGIN PASSWORD :'pw';
		CREATE DATABASE :"svc" OWNER :"svc";
		REVOKE ALL ON DATABASE :"svc" FROM PUBLIC;
	SQL
done
