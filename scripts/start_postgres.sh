#!/usr/bin/env bash
# Start the machine's PostgreSQL cluster (installed but stopped on a new machine), create a test role and
# database, and print the DSN for PPP_DIST_TEST_POSTGRES_DSN. Needs root (pg_ctlcluster). Idempotent.
set -euo pipefail
version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)
if [ -z "$version" ]; then
    echo "PostgreSQL is not installed: apt-get install -y postgresql" >&2
    exit 2
fi
# only the DSN goes to stdout: callers capture it
pg_ctlcluster "$version" main start >&2 2>/dev/null || pg_ctlcluster "$version" main status >&2
for _ in $(seq 1 30); do
    su postgres -c "psql -qAtc 'select 1'" >/dev/null 2>&1 && break
    sleep 1
done
su postgres -c "psql -qAtc \"select 1 from pg_roles where rolname='ppp_dist'\"" | grep -q 1 ||
    su postgres -c "psql -qc \"create role ppp_dist login password 'ppp_dist' createdb\"" >&2
su postgres -c "psql -qAtc \"select 1 from pg_database where datname='ppp_dist_test'\"" | grep -q 1 ||
    su postgres -c "createdb -O ppp_dist ppp_dist_test" >&2
echo "postgresql://ppp_dist:ppp_dist@127.0.0.1:5432/ppp_dist_test"
