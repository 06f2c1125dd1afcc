#!/bin/sh
# Makes sure Debian's haproxy and nginx are installed for `make test-deploy`.
# Installs the missing ones with apt-get when run as root; otherwise says so, and the
# deployment tests skip with that reason.  The packages' own services are never
# started: the tests run their own haproxy/nginx processes on 127.0.0.1 with the
# shipped configs, and stop them by PID.
set -eu
need=""
[ -x /usr/sbin/haproxy ] || need="$need haproxy"
[ -x /usr/sbin/nginx ] || need="$need nginx"
[ -z "$need" ] && exit 0
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "ensure-proxies: installing Debian's$need (their services are not started)" >&2
  export DEBIAN_FRONTEND=noninteractive
  # policy-rc.d exit 101 keeps the packages' postinst from starting nginx/haproxy on :80;
  # only when the machine has none of its own, and removed again.
  policy=/usr/sbin/policy-rc.d
  ours=""
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod 755 "$policy" && ours=1
  fi
  trap 'if [ -n "$ours" ]; then rm -f "$policy"; fi' EXIT
  apt-get update -q
  # shellcheck disable=SC2086
  apt-get install -y -q --no-install-recommends $need
else
  echo "ensure-proxies:$need missing and cannot be installed here (needs root and apt-get); the deployment tests will be skipped" >&2
fi
