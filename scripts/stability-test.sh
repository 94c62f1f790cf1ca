#!/bin/sh
# stability-test.sh [URL] [SECONDS]: the one-hour stability gate against a
# running `dsinfer serve` (default http://127.0.0.1:8001, 3600 s): 8 clients
# loop on "Write a haiku about quantum computing" with max_tokens 100, half
# of them streamed, via `dsinfer soak`. Samples the server's RSS when
# DSINFER_PID is set (e.g. DSINFER_PID=$(pgrep -n dsinfer)). Prints
# "Completed: N prompts, E errors" and exits non-zero on any failed request
# or RSS growth over 1% after warm-up. Does not start the server.
set -eu
url=${1:-http://127.0.0.1:8001}
secs=${2:-3600}
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${DSINFER_BIN:-}
if [ -z "$bin" ]; then
    for b in "$root/build/dsinfer" "$root/build-server/dsinfer" "$(command -v dsinfer || true)"; do
        if [ -n "$b" ] && [ -x "$b" ]; then bin=$b; break; fi
    done
fi
if [ -z "$bin" ]; then
    echo "stability-test: dsinfer binary not found (set DSINFER_BIN)" >&2
    exit 2
fi
report=${REPORT:-stability-report.json}
set -- soak --url "$url" --duration "$secs" --concurrency 8 --stream-ratio 0.5 \
    --max-tokens 100 --prompt "Write a haiku about quantum computing" --report "$report"
if [ -n "${DSINFER_PID:-}" ]; then set -- "$@" --pid "$DSINFER_PID"; fi
if [ -n "${DSINFER_API_KEY:-}" ]; then set -- "$@" --api-key "$DSINFER_API_KEY"; fi
# soak prints the summary, ending with "Completed: N prompts, E errors"
exec "$bin" "$@"
