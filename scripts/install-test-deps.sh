#!/usr/bin/env bash
# Installs what the tests run besides cargo, before they run (scripts/test.sh calls this first),
# so no test installs anything mid-run. Prints one line per package it installs and nothing when
# everything is present.
#
# Installing needs root and apt (Debian or Ubuntu). Anywhere else, or without root, it lists
# what is missing and exits 1; install those with your system's packages (the commands and
# files it looks for are named) and run it again, or run `cargo test` and let the tests that
# need a missing tool fail naming it.
#
# What the tests need:
#   curl, setsid       scripts/run-local-pod.sh, run by tests/tests/local_pod.rs
#   kill (procps)      signals to the real processes in every whole-process test
#   script (bsdutils)  a terminal for the colored output of `forwarder logs` (query.rs)
#   openssl            certificates for the TLS tests (network_sinks.rs, redis_syslog_sinks.rs)
#   redis-server       the redis sink against a real server (redis_syslog_sinks.rs)
#   nats-server        the nats sink against a real 3-node JetStream cluster (nats_sink.rs)
#   rsyslogd           the syslog sink against a real rsyslog (redis_syslog_sinks.rs), and
#   rsyslog-gnutls     its TLS driver, lmnsd_gtls.so
#   promtool           Prometheus' checker of every /metrics endpoint (metrics_format.rs),
#                      from Debian's prometheus package
#   prometheus-alertmanager  alerts delivered to a real Alertmanager (alerts.rs)
#   clickhouse-server  the clickhouse sink against a real server (clickhouse_sink.rs)
#   chromium           a real headless browser for the web viewer (web_viewer.rs), launched as
#                      /usr/lib/chromium/chromium (the /usr/bin wrapper does not exec)
# rsyslog only recommends logrotate; --no-install-recommends leaves it (and the rest) out.
set -euo pipefail

packages=()
whats=()
need() { # package what-it-is-for check-command...
  local package=$1 what=$2
  shift 2
  if ! "$@" >/dev/null 2>&1; then
    packages+=("$package")
    whats+=("$what")
  fi
}
program() { # name: on PATH or where Debian puts system programs (not on a user's PATH)
  type -P "$1" || [[ -x /usr/sbin/$1 ]] || [[ -x /sbin/$1 ]]
}
tls_driver() {
  compgen -G '/usr/lib/*/rsyslog/lmnsd_gtls.so' || [[ -e /usr/lib/rsyslog/lmnsd_gtls.so ]]
}
chromium_browser() { [[ -x /usr/lib/chromium/chromium ]]; }

need curl "curl (local pod script)" program curl
need util-linux "setsid (local pod script)" program setsid
need procps "kill (signals in the whole-process tests)" program kill
need bsdutils "script (terminal output of forwarder logs)" program script
need openssl "openssl (certificates for the TLS tests)" program openssl
need redis-server "redis-server (redis sink tests)" program redis-server
need nats-server "nats-server (nats sink tests)" program nats-server
need rsyslog "rsyslogd (syslog sink tests)" program rsyslogd
need rsyslog-gnutls "rsyslog's TLS driver lmnsd_gtls.so (syslog over TLS tests)" tls_driver
need prometheus "promtool (promtool check metrics on every endpoint)" program promtool
need prometheus-alertmanager "Alertmanager (alerts tests)" program prometheus-alertmanager
need clickhouse-server "clickhouse-server (clickhouse sink tests)" program clickhouse-server
need chromium "chromium (headless browser for the web viewer tests)" chromium_browser

((${#packages[@]} > 0)) || exit 0

if ((EUID != 0)) || ! command -v apt-get >/dev/null; then
  echo "install-test-deps: the tests need these, and installing them takes root and apt:" >&2
  for i in "${!packages[@]}"; do echo "  ${whats[$i]}: Debian package ${packages[$i]}" >&2; done
  echo "As root on Debian or Ubuntu: apt-get install --no-install-recommends ${packages[*]}" >&2
  echo "Elsewhere: install the same programs with your system's packages, then run this again." >&2
  exit 1
fi

log=$(mktemp -t install-test-deps.XXXXXX.log)
for i in "${!packages[@]}"; do echo "install-test-deps: installing ${packages[$i]}: ${whats[$i]}"; done
install() {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    "${packages[@]}" >>"$log" 2>&1
}
# A fresh machine (a CI container) has no package lists yet: update, then try again.
if ! install && ! { apt-get update -q >>"$log" 2>&1 && install; }; then
  echo "install-test-deps: apt-get failed installing ${packages[*]}; its output is in $log" >&2
  exit 1
fi
rm -f "$log"
