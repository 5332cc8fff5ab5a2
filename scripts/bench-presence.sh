#!/usr/bin/env bash
# Reproduces the agent footprint and console ingest figures in BENCHMARKS.md.
# Usage: cargo build --release -p edgefleet-agent -p edgefleet-console && scripts/bench-presence.sh [agents] [seconds] [agent-seconds]
set -euo pipefail
N=${1:-2000}
SECS=${2:-60}
AGENT_SECS=${3:-300}
BIN=${BIN:-$(cd "$(dirname "$0")/.." && pwd)/target/release}
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
ticks=$(getconf CLK_TCK)
cpu() { awk '{print $14+$15}' /proc/$1/stat; }
rss() { awk '/VmRSS/ {print $2}' /proc/$1/status; }
hb() { curl -s "http://127.0.0.1:$1/metrics" | awk -F' ' '/^edgefleet_ingest_messages_total\{kind="heartbeat"\}/ {print $2}'; }

if [ -z "${SKIP_AGENT:-}" ]; then
echo "== one agent, 30 s heartbeats, ${AGENT_SECS}s =="
"$BIN/edgefleet-console" --data-dir "$WORK/c1" --http 127.0.0.1:19080 --mqtt 127.0.0.1:19883 >"$WORK/c1.log" 2>&1 &
sleep 2
RUST_LOG=warn "$BIN/edgefleet-agent" run --console mqtt://127.0.0.1:19883 --data-dir "$WORK/a1" >"$WORK/a1.log" 2>&1 &
AGENT=$!
sleep 10
c0=$(cpu $AGENT); t0=$(date +%s.%N)
sleep "$AGENT_SECS"
c1=$(cpu $AGENT); t1=$(date +%s.%N)
echo "agent RSS: $(rss $AGENT) KiB"
echo "agent CPU: $(echo "($c1-$c0)/$ticks/($t1-$t0)*100" | bc -l | cut -c1-6) %"
echo "agent binary (stripped release): $(stat -c %s "$BIN/edgefleet-agent") bytes"
echo "console binary (stripped release): $(stat -c %s "$BIN/edgefleet-console") bytes"
fi

echo "== console ingest, $N simulated agents at 1 s, ${SECS}s =="
"$BIN/edgefleet-console" --data-dir "$WORK/c2" --http 127.0.0.1:19081 --mqtt 127.0.0.1:19884 >"$WORK/c2.log" 2>&1 &
CONSOLE=$!
sleep 2
RUST_LOG=error "$BIN/edgefleet-agent" simulate --count "$N" --console mqtt://127.0.0.1:19884 --interval 1s --data-dir "$WORK/sim" >"$WORK/sim.log" 2>&1 &
SIM=$!
for _ in $(seq 1 120); do
  online=$(curl -s http://127.0.0.1:19081/api/fleet/summary | sed -n 's/.*"online":\([0-9]*\).*/\1/p')
  [ "${online:-0}" -ge "$N" ] && break
  sleep 1
done
echo "online: $online"
sleep 5
h0=$(hb 19081); c0=$(cpu $CONSOLE); s0=$(cpu $SIM); t0=$(date +%s.%N)
sleep "$SECS"
h1=$(hb 19081); c1=$(cpu $CONSOLE); s1=$(cpu $SIM); t1=$(date +%s.%N)
el=$(echo "$t1-$t0" | bc -l)
echo "heartbeats/s ingested: $(echo "($h1-$h0)/$el" | bc -l | cut -c1-8) (offered: $N/s)"
echo "console CPU: $(echo "($c1-$c0)/$ticks/$el*100" | bc -l | cut -c1-6) % of one core, RSS $(rss $CONSOLE) KiB"
echo "simulator CPU: $(echo "($s1-$s0)/$ticks/$el*100" | bc -l | cut -c1-6) % of one core, RSS $(rss $SIM) KiB"
curl -s http://127.0.0.1:19081/metrics | grep -E "rejected|dropped|latency_seconds_(sum|count)" || true
# p50 and p99 upper bounds from the latency histogram buckets.
curl -s http://127.0.0.1:19081/metrics | awk '
  /^edgefleet_ingest_latency_seconds_bucket/ { match($0, /le="[^"]*"/); le[n]=substr($0, RSTART+4, RLENGTH-5); c[n++]=$2 }
  /^edgefleet_ingest_latency_seconds_count/ { total=$2 }
  END { for (i=0;i<n;i++) { if (!p50 && c[i]>=0.5*total) p50=le[i]; if (!p99 && c[i]>=0.99*total) p99=le[i] }
        print "ingest latency: p50 <= " p50 " s, p99 <= " p99 " s (" total " messages since start)" }' 
