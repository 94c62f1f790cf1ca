#!/usr/bin/env bash
# deps.sh: make sure the Debian/Ubuntu packages dsinfer builds and tests with
# are present. As root it installs what is missing; otherwise it prints the
# exact apt-get line and fails. Used by build.sh, test.sh and .ci/run.
set -euo pipefail
pkgs=(cmake ninja-build gcc clang pkg-config libpcre2-dev libmicrohttpd-dev libjansson-dev
      libcurl4-openssl-dev libclang-rt-14-dev nodejs npm)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ]; then
  echo "deps: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "deps: missing packages; run: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
