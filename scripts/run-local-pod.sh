#!/usr/bin/env bash
# Runs the whole pod on this machine, as processes: the demo apps and the traffic generator
# write logs, the three sidecars carry them on, and the forwarder's reports print here — what
# `kubectl logs <pod> -c log-forwarder` shows in a cluster. Ctrl+C stops everything in the pod's
# order (apps, then collector, processor, forwarder), each draining and committing first.
#
# Temp directories stand in for the pod's emptyDir volumes. Settings (env):
#   POD_DIR          where the volumes and the processes' logs go (default: a new temp
#                    directory, kept afterwards)
#   REPORT_INTERVAL  how often the forwarder reports (default 10s)
#   RUN_FOR          stop by itself after this many seconds (default: run until Ctrl+C)
#   BIN_DIR          take the binaries from here and build nothing (default: build with
#                    `cargo build --release` and use the release directory of cargo's target
#                    directory, CARGO_TARGET_DIR included)
#   ERROR_BURST_EVERY  seconds between the traffic generator's error bursts, which fire the
#                    WebApiErrorBurst alert in the report (default 90; 0: none)
#   STOP_TIMEOUT     seconds each process gets to drain after SIGTERM before SIGKILL (default 60)
# Ports, all on 127.0.0.1 (each must be free; the script stops before starting anything if not):
#   WEB_API_PORT     the demo web API, which the traffic generator calls (default 8080)
#   COLLECTOR_PORT   the collector's /healthz and /metrics (default 9101)
#   PROCESSOR_PORT   the processor's /healthz and /metrics (default 9102)
#   FORWARDER_PORT   the forwarder's /healthz and /metrics (default 9103)
#   QUERY_API_PORT   the forwarder's query API: /logs, /sources, /stats (default 9104)
#
# Needs bash, curl and setsid (util-linux): every process runs in a session of its own, so a
# terminal's Ctrl+C (SIGINT to the whole foreground process group) reaches this script only,
# and the script stops the pod in order. Exits 0 after a stop on Ctrl+C, SIGTERM or RUN_FOR;
# non-zero, with everything it started stopped, when a process fails to start or dies.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() {
  echo "run-local-pod: $*" >&2
  exit 1
}

for tool in curl setsid; do
  command -v "$tool" >/dev/null || fail "$tool is missing (Debian: apt-get install curl util-linux)"
done

web_port=${WEB_API_PORT:-8080}
collector_port=${COLLECTOR_PORT:-9101}
processor_port=${PROCESSOR_PORT:-9102}
forwarder_port=${FORWARDER_PORT:-9103}
query_port=${QUERY_API_PORT:-9104}
stop_timeout=${STOP_TIMEOUT:-60}
[[ $stop_timeout =~ ^[0-9]+$ ]] || fail "STOP_TIMEOUT=$stop_timeout is not a number of seconds"

# Checked before anything starts: a port held by another program can answer our health checks
# (a second run of this script answers /healthz), which would hide the failure.
port_settings=(WEB_API_PORT COLLECTOR_PORT PROCESSOR_PORT FORWARDER_PORT QUERY_API_PORT)
port_values=("$web_port" "$collector_port" "$processor_port" "$forwarder_port" "$query_port")
port_uses=("the demo web API" "the collector's /healthz and /metrics"
  "the processor's /healthz and /metrics" "the forwarder's /healthz and /metrics"
  "the forwarder's query API")
for i in "${!port_values[@]}"; do
  p=${port_values[$i]}
  [[ $p =~ ^[0-9]+$ ]] && ((p >= 1 && p <= 65535)) \
    || fail "${port_settings[$i]}=$p is not a port number"
  for ((j = 0; j < i; j++)); do
    [[ $p != "${port_values[$j]}" ]] \
      || fail "${port_settings[$j]} and ${port_settings[$i]} are both $p; each needs its own port"
  done
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    fail "port $p (${port_settings[$i]}: ${port_uses[$i]}) is already in use on 127.0.0.1;" \
      "stop what holds it or set ${port_settings[$i]} to a free port. Nothing was started."
  fi
done

if [[ -n "${BIN_DIR:-}" ]]; then
  bin=$BIN_DIR
else
  cargo build --release --workspace --bins
  # Asking cargo covers CARGO_TARGET_DIR and build.target-dir in a cargo config alike.
  target=$(cargo metadata --format-version 1 --no-deps \
    | grep -o '"target_directory":"[^"]*"' | cut -d'"' -f4)
  bin=${target:-target}/release
fi
for name in collector processor forwarder web-api database-client background-worker \
  traffic-generator; do
  [[ -x $bin/$name ]] || fail "$bin/$name is missing (BIN_DIR=$bin)"
done

pod=${POD_DIR:-$(mktemp -d -t logging-demo.XXXXXX)}
mkdir -p "$pod"/{logs,collected-logs,processed-logs,forwarded-logs,config}

cat > "$pod/config/forwarder.yaml" <<YAML
report:
  interval: ${REPORT_INTERVAL:-10s}
  latest_records: 5
  # Each sidecar's CPU and memory in the report, from their /metrics.
  sidecars:
    collector: http://127.0.0.1:$collector_port/metrics
    processor: http://127.0.0.1:$processor_port/metrics
# The default rules' alerts, shown in the report; the traffic generator's error burst fires
# WebApiErrorBurst and it resolves a minute after the burst.
alerts:
  rules_file: $pod/config/rules.yaml
sinks:
  - type: file
    name: archive
    directory: $pod/forwarded-logs
    per_source: true
    max_file_bytes: 64MiB
YAML
cp processor/rules/default.yaml "$pod/config/rules.yaml"

# Parallel arrays: pid and name of each process, apps and sidecars apart, in start order.
app_pids=()
app_names=()
sidecar_pids=()
sidecar_names=()
timer=

# Whether a child still runs; an exited child not yet reaped (a zombie) does not.
running() {
  local stat
  read -r stat 2>/dev/null <"/proc/$1/stat" || return 1
  stat=${stat##*) }
  [[ ${stat%% *} != Z ]]
}

# Waits for a child that was sent SIGTERM, and kills it if it outlasts STOP_TIMEOUT.
reap() { # pid name
  local deadline=$((SECONDS + stop_timeout))
  while running "$1"; do
    if ((SECONDS >= deadline)); then
      echo "run-local-pod: $2 did not stop within ${stop_timeout}s of SIGTERM; killing it" >&2
      kill -KILL "$1" 2>/dev/null || true
      break
    fi
    sleep 0.1
  done
  wait "$1" 2>/dev/null || true
}

# Stops whatever was started, in the pod's order; runs on every way out, so a failed start
# leaves nothing behind. Safe to call twice: the second call finds nothing to stop.
stop_pod() {
  # Stopping goes on whatever fails on the way (an echo to a terminal already closed).
  set +e
  trap '' INT TERM HUP
  local i
  [[ -z $timer ]] || kill "$timer" 2>/dev/null || true
  timer=
  ((${#app_pids[@]} + ${#sidecar_pids[@]} > 0)) || return 0
  echo "Stopping the pod: apps first, then collector, processor, forwarder (each drains and commits)."
  for i in "${!app_pids[@]}"; do kill -TERM "${app_pids[$i]}" 2>/dev/null || true; done
  for i in "${!app_pids[@]}"; do reap "${app_pids[$i]}" "${app_names[$i]}"; done
  ((${#app_pids[@]} == 0)) || echo "  stopped: ${app_names[*]}"
  app_pids=()
  # Sidecars were started downstream first; stop them upstream first, one after another, so
  # each finds everything its upstream committed.
  for ((i = ${#sidecar_pids[@]} - 1; i >= 0; i--)); do
    kill -TERM "${sidecar_pids[$i]}" 2>/dev/null || true
    reap "${sidecar_pids[$i]}" "${sidecar_names[$i]}"
    echo "  stopped: ${sidecar_names[$i]}"
  done
  sidecar_pids=()
  echo "Stopped. Volumes kept in $pod (forwarded records in $pod/forwarded-logs)."
}
trap stop_pod EXIT
trap 'stop_pod; exit 0' INT TERM HUP

# The end of a process' log, for a message saying why it stopped.
log_tail() { # name
  echo "  last lines of $pod/$1.log:" >&2
  tail -n 5 "$pod/$1.log" 2>/dev/null | sed 's/^/    /' >&2 || true
}

# Starts a process in a session of its own (so the terminal's signals skip it), its stderr in
# <name>.log; sets `started` to its pid.
start() { # name command...
  local name=$1
  shift
  setsid "$@" </dev/null 2>"$pod/$name.log" &
  started=$!
}

# Waits until `url` answers while the process runs; fails naming the port and the log if it
# dies first or never answers.
wait_ready() { # pid name port setting url
  local deadline=$((SECONDS + 30))
  until curl -fsS -o /dev/null --max-time 2 "$5" 2>/dev/null; do
    if ! running "$1"; then
      log_tail "$2"
      fail "$2 (port $3, $4) exited while starting; see $pod/$2.log"
    fi
    if ((SECONDS >= deadline)); then
      log_tail "$2"
      fail "$2 (port $3, $4) did not answer $5 within 30 s; see $pod/$2.log"
    fi
    sleep 0.1
  done
  # Answered, but possibly just before failing on a second listener (the forwarder's API).
  running "$1" || {
    log_tail "$2"
    fail "$2 (port $3, $4) exited right after starting; see $pod/$2.log"
  }
}

start_sidecar() { # name port setting command...
  local name=$1 port=$2 setting=$3
  shift 3
  start "$name" "$@"
  sidecar_pids+=("$started")
  sidecar_names+=("$name")
  wait_ready "$started" "$name" "$port" "$setting" "http://127.0.0.1:$port/healthz"
}

start_app() { # name command...
  local name=$1
  shift
  start "$name" "$@"
  app_pids+=("$started")
  app_names+=("$name")
}

echo "Pod volumes in $pod; process logs in $pod/*.log"
# Sidecars start first, downstream first, as the manifests declare them.
start_sidecar log-forwarder "$forwarder_port" FORWARDER_PORT \
  "$bin/forwarder" --config "$pod/config/forwarder.yaml" --input-dir "$pod/processed-logs" \
  --listen "127.0.0.1:$forwarder_port" --api-listen "127.0.0.1:$query_port"
start_sidecar log-processor "$processor_port" PROCESSOR_PORT \
  "$bin/processor" --rules "$pod/config/rules.yaml" --input-dir "$pod/collected-logs" \
  --journal-dir "$pod/processed-logs" --listen "127.0.0.1:$processor_port"
start_sidecar log-collector "$collector_port" COLLECTOR_PORT \
  "$bin/collector" --watch "$pod/logs/*.log" --journal-dir "$pod/collected-logs" \
  --listen "127.0.0.1:$collector_port"

start_app web-api "$bin/web-api" --log-dir "$pod/logs" --listen "127.0.0.1:$web_port"
wait_ready "$started" web-api "$web_port" WEB_API_PORT "http://127.0.0.1:$web_port/health"
start_app database-client "$bin/database-client" --log-dir "$pod/logs"
start_app background-worker "$bin/background-worker" --log-dir "$pod/logs"
start_app traffic-generator "$bin/traffic-generator" --target "http://127.0.0.1:$web_port" \
  --requests-per-sec 5 --error-burst-every-secs "${ERROR_BURST_EVERY:-90}" --error-burst-secs 20
# These apps have nothing to ask; one that cannot start (a bad flag, an unwritable log
# directory) exits within moments, and a later death is caught by the loop at the end.
sleep 0.5
for i in "${!app_pids[@]}"; do
  running "${app_pids[$i]}" || {
    log_tail "${app_names[$i]}"
    fail "${app_names[$i]} exited while starting; see $pod/${app_names[$i]}.log"
  }
done

echo "Demo apps running. Ports: web API http://127.0.0.1:$web_port (WEB_API_PORT);" \
  "/healthz and /metrics of collector :$collector_port (COLLECTOR_PORT)," \
  "processor :$processor_port (PROCESSOR_PORT), forwarder :$forwarder_port (FORWARDER_PORT);" \
  "query API :$query_port (QUERY_API_PORT)."
echo "Web viewer: http://127.0.0.1:$query_port/ (live tail, filters, sources, alerts)"
echo "Query the logs: $bin/forwarder logs --input-dir $pod/processed-logs -f -n 20 access.log"
echo "  or curl 'http://127.0.0.1:$query_port/logs?tail=20&format=text'; live view: $bin/forwarder top --input-dir $pod/processed-logs"
echo "Reports every ${REPORT_INTERVAL:-10s}; Ctrl+C to stop."

if [[ -n "${RUN_FOR:-}" ]]; then
  sleep "$RUN_FOR" &
  timer=$!
fi
# `wait -n` returns when any child exits; a trapped signal runs its trap, which exits.
while :; do
  wait -n || true
  if [[ -n $timer ]] && ! running "$timer"; then
    timer=
    stop_pod
    exit 0
  fi
  for i in "${!app_pids[@]}"; do
    running "${app_pids[$i]}" || {
      log_tail "${app_names[$i]}"
      fail "${app_names[$i]} exited; see $pod/${app_names[$i]}.log"
    }
  done
  for i in "${!sidecar_pids[@]}"; do
    running "${sidecar_pids[$i]}" || {
      log_tail "${sidecar_names[$i]}"
      fail "${sidecar_names[$i]} exited; see $pod/${sidecar_names[$i]}.log"
    }
  done
done
