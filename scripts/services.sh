#!/usr/bin/env bash
# Brings up what the tests need: PostgreSQL on 127.0.0.1:5432 (trust auth
# for local TCP, database "test") and Redis on 127.0.0.1:6379, plus the
# redis-server and redis-cli binaries that tests use to run private Redis
# servers and clusters. Installs Debian packages when something is missing,
# starts what is not running, waits until both answer, and does nothing when
# everything already answers. Run as root (or with sudo) on Debian/Ubuntu.
set -euo pipefail

PGHOST=127.0.0.1 PGPORT=5432 REDIS_PORT=6379

log() { echo "services: $*" >&2; }

pg_ok() { psql -h "$PGHOST" -p "$PGPORT" -U postgres -d test -Atqc 'select 1' >/dev/null 2>&1; }
redis_ok() { [ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ]; }

apt_updated=
install() {
	if [ -z "$apt_updated" ]; then
		DEBIAN_FRONTEND=noninteractive apt-get update -qq
		apt_updated=1
	fi
	log "installing $*"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

wait_for() { # name command...
	local name=$1; shift
	for _ in $(seq 1 60); do
		if "$@"; then return 0; fi
		sleep 0.5
	done
	log "$name did not come up"; return 1
}

ensure_postgres() {
	command -v psql >/dev/null && pg_ok && return 0
	command -v pg_ctlcluster >/dev/null || install postgresql postgresql-client
	local ver conf
	ver=$(ls /etc/postgresql | sort -V | tail -1)
	conf=/etc/postgresql/$ver/main
	# Trust local TCP connections, as the tests expect; loopback only.
	if ! grep -q '^host all all 127.0.0.1/32 trust' "$conf/pg_hba.conf"; then
		sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$conf/pg_hba.conf"
		pg_ctlcluster --skip-systemctl-redirect "$ver" main reload 2>/dev/null || true
	fi
	if ! pg_ctlcluster --skip-systemctl-redirect "$ver" main status >/dev/null 2>&1; then
		log "starting PostgreSQL $ver"
		pg_ctlcluster --skip-systemctl-redirect "$ver" main start
	fi
	wait_for postgres psql -h "$PGHOST" -p "$PGPORT" -U postgres -d postgres -Atqc 'select 1'
	if ! pg_ok; then
		log "creating database test"
		psql -h "$PGHOST" -p "$PGPORT" -U postgres -d postgres -qc 'create database test'
	fi
}

ensure_redis() {
	command -v redis-server >/dev/null && command -v redis-cli >/dev/null || install redis-server redis-tools
	redis_ok && return 0
	log "starting Redis on 127.0.0.1:$REDIS_PORT"
	mkdir -p /var/lib/redis /var/log/redis
	redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" --save "" \
		--appendonly no --dir /var/lib/redis --logfile /var/log/redis/cachedpq.log
	wait_for redis redis_ok
}

command -v psql >/dev/null || install postgresql-client
ensure_postgres
ensure_redis
log "PostgreSQL ($PGHOST:$PGPORT, database test) and Redis (127.0.0.1:$REDIS_PORT) are up"
