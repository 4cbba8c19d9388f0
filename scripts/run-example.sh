#!/usr/bin/env bash
# `make run`: start `isorun up` with local images on a free port and a temporary data dir, wait
# for /v1/health, run the landing page's examples/spawn.py against it with the printed URL and
# key, then stop `up` (SIGTERM: it destroys its VMs and stops its registry). Exits non-zero on
# any failure; `up`'s log is shown when something went wrong.
set -euo pipefail
cd "$(dirname "$0")/.."

READY_TIMEOUT_S=${ISORUN_RUN_READY_TIMEOUT_S:-600}  # a first run builds the python image
data_dir=$(mktemp -d /tmp/isorun-run-XXXXXX)
log="$data_dir/up.log"
free_port() { uv run python -c 'from isorun_backend.local_images.registry import free_port; print(free_port())'; }
port=$(free_port)
url_port=$(free_port)
up_pid=""

finish() {
  local status=$?
  if [ -n "$up_pid" ] && kill -0 "$up_pid" 2>/dev/null; then
    kill -TERM "$up_pid"
    wait "$up_pid" || status=1
  fi
  if [ "$status" -ne 0 ]; then
    echo "make run: failed; isorun up's log:" >&2
    cat "$log" >&2 || true
  fi
  rm -rf "$data_dir"
  exit "$status"
}
trap finish EXIT

echo "make run: isorun up --local-images on 127.0.0.1:$port (data in $data_dir)" >&2
# Started from the venv rather than through `uv run`, so that SIGTERM reaches isorun itself.
ISORUN_HOSTD_RUN_DIR="$data_dir/run" .venv/bin/isorun up --local-images --port "$port" --urls "127.0.0.1:$url_port" \
  --data-dir "$data_dir" >"$data_dir/up.env" 2>"$log" &
up_pid=$!

deadline=$((SECONDS + READY_TIMEOUT_S))
until grep -q '^ISORUN_API_KEY=' "$data_dir/up.env" 2>/dev/null \
  && curl -sf "http://127.0.0.1:$port/v1/health" >/dev/null; do
  kill -0 "$up_pid" 2>/dev/null || { echo "make run: isorun up exited" >&2; exit 1; }
  ((SECONDS < deadline)) || { echo "make run: not ready in ${READY_TIMEOUT_S} s" >&2; exit 1; }
  sleep 0.5
done
cat "$log" >&2

set -a
# shellcheck disable=SC1091
source "$data_dir/up.env"
set +a
echo "make run: python examples/spawn.py" >&2
uv run --no-sync python examples/spawn.py
