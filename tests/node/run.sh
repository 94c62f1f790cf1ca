#!/bin/sh
# run.sh [URL] [API_KEY]: runs openai.test.mjs (the official openai npm
# package) against an already running `dsinfer serve`. ctest runs the same
# file through tests/test_server_node.c, which starts its own server.
# Install the package once with: npm ci --prefix tests/node  (needs network;
# the tests themselves never fetch anything). Exits 77 (skip) without it.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
if ! command -v node >/dev/null 2>&1; then
    echo "node test: SKIP: node is not installed" >&2
    exit 77
fi
if [ ! -f "$here/node_modules/openai/package.json" ]; then
    echo "node test: SKIP: run 'npm ci --prefix $here' first" >&2
    exit 77
fi
export DSINFER_URL=${1:-${DSINFER_URL:-http://127.0.0.1:8080}}
export DSINFER_API_KEY=${2:-${DSINFER_API_KEY:-none}}
cd "$here"
exec node --test openai.test.mjs
