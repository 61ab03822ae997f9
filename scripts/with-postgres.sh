#!/usr/bin/env bash
# Run a command against a throwaway PostgreSQL server, then remove the server.
#
#   scripts/with-postgres.sh .venv/bin/python -m pytest tests/integration/test_store_postgres.py
#
# Starts a fresh cluster in a temporary folder, listening on 127.0.0.1 on a free port only, with password
# authentication for TCP; exports ASSAY_TEST_PG_URL (postgresql+psycopg://...) for the command; stops the
# server and deletes the folder however the command ends; exits with the command's status.
# Run as root, the server runs as the 'postgres' user (PostgreSQL refuses to run as root).
# Needs the server binaries (Debian: apt-get install postgresql); PG_BIN may name their folder.
set -euo pipefail

die() {
    echo "with-postgres.sh: $*" >&2
    exit 2
}

[ $# -gt 0 ] || die "usage: scripts/with-postgres.sh COMMAND [ARGS...]"

# The server binaries: PG_BIN, else PATH, else the newest Debian/Ubuntu install.
bin="${PG_BIN:-}"
if [ -z "$bin" ] && command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
    bin="$(dirname "$(readlink -f "$(command -v initdb)")")"  # through symlinks, to find psql beside it
fi
if [ -z "$bin" ]; then
    bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
fi
if [ -z "$bin" ] || [ ! -x "$bin/initdb" ] || [ ! -x "$bin/pg_ctl" ] || [ ! -x "$bin/psql" ]; then
    die "PostgreSQL server binaries (initdb, pg_ctl, psql) not found. Install them (Debian/Ubuntu: apt-get install postgresql) or set PG_BIN to their folder."
fi

as_server_user() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}
if [ "$(id -u)" -eq 0 ] && ! id postgres >/dev/null 2>&1; then
    die "running as root, but there is no 'postgres' user to run the server as."
fi

command -v python3 >/dev/null 2>&1 || die "python3 is needed to find a free port."
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
password="$(python3 -c 'import secrets; print(secrets.token_hex(16))')"

tmp="$(mktemp -d "${TMPDIR:-/tmp}/assay-pg.XXXXXX")"
chmod 700 "$tmp"
[ "$(id -u)" -ne 0 ] || chown postgres: "$tmp"

cleanup() {
    as_server_user "$bin/pg_ctl" -D "$tmp/data" -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

printf '%s\n' "$password" >"$tmp/pwfile"
[ "$(id -u)" -ne 0 ] || chown postgres: "$tmp/pwfile"
as_server_user "$bin/initdb" -D "$tmp/data" -U assay --pwfile="$tmp/pwfile" -A scram-sha-256 \
    --auth-local=trust -E UTF8 --no-instructions >"$tmp/initdb.log" 2>&1 ||
    { cat "$tmp/initdb.log" >&2; die "initdb failed."; }
# fsync off: the cluster is thrown away, durability only costs time here.
as_server_user "$bin/pg_ctl" -D "$tmp/data" -l "$tmp/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $tmp -c fsync=off" start >/dev/null ||
    { cat "$tmp/server.log" >&2; die "the server did not start."; }
as_server_user "$bin/psql" -h "$tmp" -p "$port" -U assay -d postgres -v ON_ERROR_STOP=1 -q \
    -c "CREATE DATABASE assay_test" >/dev/null || die "could not create the test database."

export ASSAY_TEST_PG_URL="postgresql+psycopg://assay:${password}@127.0.0.1:${port}/assay_test"
echo "with-postgres.sh: PostgreSQL $("$bin/pg_ctl" --version | awk '{print $3}') on 127.0.0.1:$port" >&2

set +e
"$@"
status=$?
set -e
exit "$status"
