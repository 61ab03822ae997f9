#!/usr/bin/env bash
# Run a command beside a throwaway S3-compatible endpoint (moto's standalone server), then stop it.
#
#   scripts/with-s3.sh .venv/bin/python -m pytest tests/integration/test_artifacts_s3.py
#
# Starts the server on 127.0.0.1 on a free port, waits until it answers, exports ASSAY_TEST_S3_ENDPOINT
# (http://127.0.0.1:PORT) for the command, stops the server however the command ends, and exits with the
# command's status. The server keeps everything in memory: nothing is left behind. MOTO_SERVER names the
# server's executable (default: moto_server on PATH; `make setup` installs it in .venv/bin).
set -euo pipefail

die() {
    echo "with-s3.sh: $*" >&2
    exit 2
}

[ $# -gt 0 ] || die "usage: scripts/with-s3.sh COMMAND [ARGS...]"
server="${MOTO_SERVER:-moto_server}"
command -v "$server" >/dev/null 2>&1 || die "$server not found: pip install 'moto[server]' (the test extra has it)."
command -v python3 >/dev/null 2>&1 || die "python3 is needed to find a free port."
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
log="$(mktemp "${TMPDIR:-/tmp}/assay-s3.XXXXXX")"

"$server" -H 127.0.0.1 -p "$port" >"$log" 2>&1 &
pid=$!
cleanup() {
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    rm -f "$log"
}
trap cleanup EXIT

for _ in $(seq 1 100); do
    if python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/moto-api/', timeout=1)" 2>/dev/null; then
        break
    fi
    kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; die "the S3 server exited before it answered."; }
    sleep 0.1
done
python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/moto-api/', timeout=1)" 2>/dev/null \
    || { cat "$log" >&2; die "the S3 server did not answer on port $port within 10 s."; }

export ASSAY_TEST_S3_ENDPOINT="http://127.0.0.1:$port"
set +e
"$@"
status=$?
set -e
exit "$status"
