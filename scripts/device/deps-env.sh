# deps-env.sh (sourced): makes the -dev packages the build needs available on a
# lent GPU machine that lacks them and has no apt: unpacks the carried
# .dev/debs under /tmp/deps (never into /) and exports the paths. Made here
# once with
#   cd .dev/debs && apt-get download pkgconf pkgconf-bin libpkgconf3 $(apt-cache depends --recurse
#     --no-recommends --no-suggests libpcre2-dev libmicrohttpd-dev libjansson-dev libcurl4-openssl-dev
#     | grep -v '^[ <]' | sort -u | grep -v -e '^libc6' -e '^libgcc' -e '^libstdc++')
if ! command -v pkg-config >/dev/null || ! pkg-config --exists libpcre2-8 libmicrohttpd jansson libcurl; then
  if ls .dev/debs/*.deb >/dev/null 2>&1; then
    mkdir -p /tmp/deps
    for f in .dev/debs/*.deb; do dpkg -x "$f" /tmp/deps; done
    find /tmp/deps -name '*.pc' -exec sed -i 's|^prefix=/usr$|prefix=/tmp/deps/usr|' {} +
    export PKG_CONFIG_PATH=/tmp/deps/usr/lib/x86_64-linux-gnu/pkgconfig:/tmp/deps/usr/share/pkgconfig
    export LD_LIBRARY_PATH=/tmp/deps/usr/lib/x86_64-linux-gnu:/tmp/deps/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
    export LIBRARY_PATH=/tmp/deps/usr/lib/x86_64-linux-gnu:${LIBRARY_PATH:-}
    command -v pkg-config >/dev/null || export PATH=/tmp/deps/usr/bin:$PATH
    echo "deps: unpacked $(ls .dev/debs/*.deb | wc -l) packages into /tmp/deps"
  else
    echo "deps: missing and no .dev/debs to unpack"
  fi
else
  echo "deps: all present"
fi
