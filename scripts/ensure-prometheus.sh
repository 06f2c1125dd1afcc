#!/bin/sh
# Makes sure Debian's prometheus (with promtool) is installed for `make test-deploy`.
# Installs it with apt-get when run as root; otherwise says so, and the monitoring
# tests (tests/deploy/test_monitoring.py) skip with that reason.  The package's own
# service is never started: the test runs its own prometheus on 127.0.0.1 with a
# temporary storage directory, and stops it by PID.
set -eu
[ -x /usr/bin/prometheus ] && [ -x /usr/bin/promtool ] && exit 0
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "ensure-prometheus: installing Debian's prometheus (its service is not started)" >&2
  export DEBIAN_FRONTEND=noninteractive
  # policy-rc.d exit 101 keeps the package's postinst from starting prometheus on :9090;
  # only when the machine has none of its own, and removed again.
  policy=/usr/sbin/policy-rc.d
  ours=""
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod 755 "$policy" && ours=1
  fi
  trap 'if [ -n "$ours" ]; then rm -f "$policy"; fi' EXIT
  apt-get update -q
  # no node exporter (a Recommends): the test scrapes the bridge and prometheus itself
  apt-get install -y -q --no-install-recommends prometheus
else
  echo "ensure-prometheus: prometheus missing and cannot be installed here (needs root and apt-get); the monitoring tests will be skipped" >&2
fi
