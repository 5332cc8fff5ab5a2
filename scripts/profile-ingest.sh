#!/usr/bin/env bash
# Loads a release console with a simulated fleet and measures (and optionally profiles)
# its ingest over one window: heartbeats stored per second, p50/p99 of the ingest latency
# within the window, console CPU and its ingest thread's share, simulator CPU. Used for the
# ingest profile in BENCHMARKS.md ("Where the console's ingest time goes").
#
#   cargo build --release -p edgefleet-console -p edgefleet-agent
#   scripts/profile-ingest.sh AGENTS INTERVAL [embedded|mosquitto] [WINDOW_SECS]
#
# PERF=1 records a perf profile of the console during the window into $OUT/perf.data (build
# with CARGO_PROFILE_RELEASE_STRIP=false CARGO_PROFILE_RELEASE_DEBUG=line-tables-only for
# symbols; PERF_ARGS overrides `-F 499 -g`, e.g. "-F 199 --call-graph dwarf,16384").
# CONSOLE=path runs another console binary against the same simulator build (A/B runs).
# OUT=dir keeps the data, logs and metrics there (default: a temporary dir, removed).
set -euo pipefail
N=${1:?agents}
IV=${2:?interval, e.g. 500ms}
MODE=${3:-embedded}
WINDOW=${4:-20}
case "$MODE" in
    embedded | mosquitto) ;;
    *) echo "profile-ingest.sh: the broker is embedded or mosquitto, got '$MODE'" >&2; exit 2 ;;
esac
BIN=${BIN:-$(cd "$(dirname "$0")/.." && pwd)/target/release}
CONSOLE=${CONSOLE:-$BIN/edgefleet-console}
if [ -n "${OUT:-}" ]; then
    rm -rf "$OUT" && mkdir -p "$OUT"
    D=$OUT
else
    D=$(mktemp -d)
fi
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
HTTP=127.0.0.1:$(port)
MQTT_PORT=$(port)
MQTT=127.0.0.1:$MQTT_PORT
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap 'cleanup; [ -n "${OUT:-}" ] || rm -rf "$D"' EXIT

# Every simulated agent connects from 127.0.0.1, which a real fleet never does: the embedded
# broker's per-address connect limit would throttle the ramp (as the scale bench, it is off).
MAXCONN=$((N * 3 / 2 + 100))
[ "$MAXCONN" -ge 10000 ] || MAXCONN=10000
EXTRA=$(printf '[mqtt]\nconnect_burst_per_ip = 0\nmax_connections = %s' "$MAXCONN")
if [ "$MODE" = mosquitto ]; then
    printf 'user root\nlistener %s 127.0.0.1\nallow_anonymous true\nmax_queued_messages 100000\nset_tcp_nodelay true\nlog_dest stderr\nlog_type error\n' \
        "$MQTT_PORT" >"$D/mosquitto.conf"
    mosquitto -c "$D/mosquitto.conf" >"$D/mosquitto.log" 2>&1 &
    pids+=($!)
    sleep 0.5
    EXTRA=$(printf '[mqtt]\nexternal = "mqtt://%s"' "$MQTT")
fi
cat >"$D/console.toml" <<EOT
data_dir = "$D/data"
[presence]
heartbeat_interval = "1s"
grace = "2s"
restart_grace = "60s"
$EXTRA
EOT
ARGS=(--config "$D/console.toml" --http "$HTTP")
[ "$MODE" = mosquitto ] || ARGS+=(--mqtt "$MQTT")
RUST_LOG=warn "$CONSOLE" "${ARGS[@]}" >"$D/console.log" 2>&1 &
CPID=$!
pids+=($CPID)
for _ in $(seq 100); do curl -sf "http://$HTTP/healthz" >/dev/null && break; sleep 0.2; done
KEY=$(cat "$D/data/admin.key")
TOKEN=$(curl -sf -H "Authorization: Bearer $KEY" -H 'content-type: application/json' \
    -d '{"auto_approve": true, "expires": "never"}' "http://$HTTP/api/tokens" |
    python3 -c 'import sys, json; print(json.load(sys.stdin)["token"])')
EDGEFLEET_AGENT_TOKEN=$TOKEN RUST_LOG=warn "$BIN/edgefleet-agent" simulate --count "$N" \
    --console "mqtt://$MQTT" --interval "$IV" --data-dir "$D/sim" >"$D/sim.log" 2>&1 &
SPID=$!
pids+=($SPID)
metrics() { curl -s "http://$HTTP/metrics"; }
START=$(date +%s)
while true; do
    ON=$(metrics | awk '/^edgefleet_agents_online /{print $2}')
    [ "${ON:-0}" -ge "$N" ] && break
    [ $(($(date +%s) - START)) -lt 900 ] || { echo "only ${ON:-0} of $N online after 900 s" >&2; exit 1; }
    sleep 1
done
echo "all $N online after $(($(date +%s) - START)) s"
# The births and their first heartbeats bunch up; measure the steady state after them.
sleep 10
ticks() { awk '{print $14+$15}' "$1"; }
IT=$(dirname "$(grep -lx ingest /proc/$CPID/task/*/comm | head -1)")
metrics >"$D/metrics-0.txt"
C0=$(ticks /proc/$CPID/stat); I0=$(ticks "$IT/stat"); S0=$(ticks /proc/$SPID/stat); T0=$(date +%s.%N)
if [ "${PERF:-0}" = 1 ]; then
    # shellcheck disable=SC2086
    perf record ${PERF_ARGS:--F 499 -g} -p "$CPID" -o "$D/perf.data" -- sleep "$WINDOW" >/dev/null 2>&1
else
    sleep "$WINDOW"
fi
metrics >"$D/metrics-1.txt"
C1=$(ticks /proc/$CPID/stat); I1=$(ticks "$IT/stat"); S1=$(ticks /proc/$SPID/stat); T1=$(date +%s.%N)
RSS=$(awk '/VmRSS/ {print $2}' /proc/$CPID/status)
python3 - "$D" "$T0" "$T1" "$C0" "$C1" "$I0" "$I1" "$S0" "$S1" "$(getconf CLK_TCK)" "$RSS" "$N" "$IV" "$MODE" <<'PY'
import re, sys
d, t0, t1, c0, c1, i0, i1, s0, s1, hz, rss, n, iv, mode = sys.argv[1:]
el = float(t1) - float(t0)
def read(path):
    out = {}
    for line in open(path):
        m = re.match(r'^(\S+) (\S+)$', line.strip())
        if m and not line.startswith('#'):
            out[m.group(1)] = float(m.group(2))
    return out
a, b = read(f"{d}/metrics-0.txt"), read(f"{d}/metrics-1.txt")
hb = 'edgefleet_ingest_messages_total{kind="heartbeat"}'
stored = (b.get(hb, 0) - a.get(hb, 0)) / el
lost = sum(v - a.get(k, 0) for k, v in b.items()
           if k.startswith('edgefleet_broker_console_queue_dropped_total')
           or k.startswith('edgefleet_ingest_rejected_total'))
buckets = sorted(((float('inf') if k.split('"')[1] == '+Inf' else float(k.split('"')[1])), v - a.get(k, 0))
                 for k, v in b.items() if k.startswith('edgefleet_ingest_latency_seconds_bucket'))
total = buckets[-1][1] if buckets else 0
def q(p):
    for le, c in buckets:
        if total and c >= p * total:
            return "> 2.5 s" if le == float('inf') else f"<= {le * 1000:g} ms"
    return "no messages"
cpu = lambda x, y: (int(y) - int(x)) / int(hz) / el * 100
print(f"{n} agents at {iv} ({mode}): stored {stored:.0f}/s, p50 {q(0.5)}, p99 {q(0.99)}, "
      f"lost {lost:.0f}, console CPU {cpu(c0, c1):.0f} % (ingest thread {cpu(i0, i1):.0f} %), "
      f"console RSS {int(rss) // 1024} MiB, simulator CPU {cpu(s0, s1):.0f} %, window {el:.0f} s")
PY
