#!/usr/bin/env bash
# deps.sh: make sure the Debian/Ubuntu packages dsinfer builds and tests with
# are present. As root it installs what is missing; otherwise it prints the
# exact apt-get line and fails. Node.js (for the OpenAI-SDK test) is checked
# by command, since many machines have it from outside Debian; without it
# that one test skips. Used by build.sh, test.sh and .ci/run.
set -euo pipefail
pkgs=(cmake ninja-build gcc clang pkg-config libpcre2-dev libmicrohttpd-dev libjansson-dev
      libcurl4-openssl-dev libclang-rt-14-dev)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
optional=()
command -v node >/dev/null && command -v npm >/dev/null || optional=(nodejs npm)
[ ${#missing[@]} -eq 0 ] && [ ${#optional[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  [ ${#missing[@]} -eq 0 ] || { echo "deps: missing packages; run: sudo apt-get install -y ${missing[*]}" >&2; exit 1; }
  echo "deps: note: node/npm not found (sudo apt-get install -y nodejs npm); the Node SDK test will skip" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: installing ${missing[*]}" >&2
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if [ ${#optional[@]} -gt 0 ]; then
  apt-get install -y -qq --no-install-recommends "${optional[@]}" >/dev/null ||
    echo "deps: note: could not install nodejs/npm; the Node SDK test will skip" >&2
fi
