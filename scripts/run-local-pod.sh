#!/usr/bin/env bash
# Runs the whole pod on this machine, as processes: the demo apps and the traffic generator
# write logs, the three sidecars carry them on, and the forwarder's reports print here — what
# `kubectl logs <pod> -c log-forwarder` shows in a cluster. Ctrl+C stops everything in the pod's
# order (apps, then collector, processor, forwarder), each draining and committing first.
#
# Temp directories stand in for the pod's emptyDir volumes. Settings (env):
#   POD_DIR          where the volumes go (default: a new temp directory, kept afterwards)
#   REPORT_INTERVAL  how often the forwarder reports (default 10s)
#   RUN_FOR          stop by itself after this many seconds (default: run until Ctrl+C)
#   WEB_API_PORT     the demo web API's port (default 8080); sidecars use 9101-9103
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --workspace --bins
bin=target/release
pod=${POD_DIR:-$(mktemp -d -t logging-demo.XXXXXX)}
mkdir -p "$pod"/{logs,collected-logs,processed-logs,forwarded-logs,config}
web_port=${WEB_API_PORT:-8080}

cat > "$pod/config/forwarder.yaml" <<YAML
report:
  interval: ${REPORT_INTERVAL:-10s}
  latest_records: 5
sinks:
  - type: file
    name: archive
    directory: $pod/forwarded-logs
    per_source: true
    max_file_bytes: 64MiB
YAML
cp processor/rules/default.yaml "$pod/config/rules.yaml"

apps=()
sidecars=()
wait_healthy() { # port name
  for _ in $(seq 100); do
    if curl -fsS "http://127.0.0.1:$1/healthz" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  echo "$2 did not become healthy; see $pod/$2.log" >&2
  return 1
}

stop_all() {
  trap '' INT TERM
  echo
  echo "Stopping the pod: apps first, then collector, processor, forwarder (each drains and commits)."
  for pid in "${apps[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${apps[@]}"; do wait "$pid" 2>/dev/null || true; done
  # Sidecars were started downstream first; stop them upstream first, one after another.
  for ((i = ${#sidecars[@]} - 1; i >= 0; i--)); do
    kill -TERM "${sidecars[$i]}" 2>/dev/null || true
    wait "${sidecars[$i]}" 2>/dev/null || true
  done
  echo "Stopped. Volumes kept in $pod (forwarded records in $pod/forwarded-logs)."
  exit 0
}
trap stop_all INT TERM

echo "Pod volumes in $pod; sidecar logs in $pod/*.log"
# Sidecars start first, downstream first, as the manifests declare them.
"$bin/forwarder" --config "$pod/config/forwarder.yaml" --input-dir "$pod/processed-logs" \
  --listen 127.0.0.1:9103 --api-listen 127.0.0.1:9104 2>"$pod/log-forwarder.log" &
sidecars+=($!)
wait_healthy 9103 log-forwarder
"$bin/processor" --rules "$pod/config/rules.yaml" --input-dir "$pod/collected-logs" \
  --journal-dir "$pod/processed-logs" --listen 127.0.0.1:9102 2>"$pod/log-processor.log" &
sidecars+=($!)
wait_healthy 9102 log-processor
"$bin/collector" --watch "$pod/logs/*.log" --journal-dir "$pod/collected-logs" \
  --listen 127.0.0.1:9101 2>"$pod/log-collector.log" &
sidecars+=($!)
wait_healthy 9101 log-collector

"$bin/web-api" --log-dir "$pod/logs" --listen "127.0.0.1:$web_port" 2>"$pod/web-api.log" &
apps+=($!)
"$bin/database-client" --log-dir "$pod/logs" 2>"$pod/database-client.log" &
apps+=($!)
"$bin/background-worker" --log-dir "$pod/logs" 2>"$pod/background-worker.log" &
apps+=($!)
"$bin/traffic-generator" --target "http://127.0.0.1:$web_port" --requests-per-sec 5 \
  2>"$pod/traffic-generator.log" &
apps+=($!)
echo "Demo apps running; web API on http://127.0.0.1:$web_port, metrics on :9101-9103/metrics."
echo "Query the logs: $bin/forwarder logs --input-dir $pod/processed-logs -f -n 20 access.log"
echo "  or curl 'http://127.0.0.1:9104/logs?tail=20&format=text'; live view: $bin/forwarder top --input-dir $pod/processed-logs"
echo "Reports every ${REPORT_INTERVAL:-10s}; Ctrl+C to stop."

if [[ -n "${RUN_FOR:-}" ]]; then
  sleep "$RUN_FOR" &
  wait $! || true
  stop_all
fi
wait
