#!/bin/sh
# Makes sure Debian's chromium is at /usr/bin/chromium for js-client's browser test
# (`make test-client`).  Installs it with apt-get when missing and run as root;
# otherwise says so, and the browser test is skipped.  Never downloads a browser of its own.
set -eu
CHROMIUM="${CHROMIUM_PATH:-/usr/bin/chromium}"
if [ -x "$CHROMIUM" ]; then
  exit 0
fi
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "ensure-chromium: $CHROMIUM is missing; installing Debian's chromium" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q chromium
else
  echo "ensure-chromium: $CHROMIUM is missing and cannot be installed here (needs root and apt-get); the browser test will be skipped" >&2
fi
