#!/usr/bin/env bash
# Replication figures, all in one run on a local 3-node cluster (`runnel cluster local`):
#   - raw loopback TCP (the ceiling), produce acks=all to an RF=1 and an RF=3 topic
#     (min.insync.replicas=2), and acks=1 to RF=3;
#   - failover pause: kill -9 the leader of the RF=3 topic, time until an acks=all
#     produce succeeds again (broker.session.timeout.ms is set to 3000 here; Kafka's
#     default is 9000, and the pause scales with it);
#   - catch-up rate: kill a follower, write BENCH_CATCHUP_MB, restart it, time until it
#     is back in the ISR.
#
#   scripts/cluster-bench.sh              # a few minutes
#   BENCH_COUNT=100000 scripts/cluster-bench.sh
# Needs jq. Everything it starts is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT=${BENCH_COUNT:-300000}
CATCHUP_MB=${BENCH_CATCHUP_MB:-200}
command -v jq >/dev/null || { echo "cluster-bench.sh needs jq (apt-get install jq)" >&2; exit 1; }

echo "building runnel (release)..." >&2
cargo build --release -p runnel --no-default-features >&2
BIN="${CARGO_TARGET_DIR:-target}/release/runnel"
DIR=$(mktemp -d -t runnel-cluster-bench.XXXXXX)
BASE=$((20000 + RANDOM % 20000))
CLUSTER_PID=
RESTARTED_PID=
cleanup() {
    [[ -n "$RESTARTED_PID" ]] && kill "$RESTARTED_PID" 2>/dev/null || true
    if [[ -n "$CLUSTER_PID" ]]; then kill "$CLUSTER_PID" 2>/dev/null || true; wait "$CLUSTER_PID" 2>/dev/null || true; fi
    rm -rf "$DIR"
}
trap cleanup EXIT

"$BIN" cluster local --nodes 3 --dir "$DIR" --base-port "$BASE" --controller-base-port $((BASE + 100)) \
    --set broker.session.timeout.ms=3000 --set broker.heartbeat.interval.ms=500 \
    --set replica.lag.time.max.ms=10000 > "$DIR/cluster.out" 2> "$DIR/cluster.err" &
CLUSTER_PID=$!
for _ in $(seq 1 120); do grep -q "cluster up" "$DIR/cluster.out" 2>/dev/null && break; sleep 0.5; done
B=$(sed -n 's/^cluster up: bootstrap.servers=//p' "$DIR/cluster.out")
[[ -n "$B" ]] || { cat "$DIR/cluster.err" >&2; echo "cluster did not start" >&2; exit 1; }
echo "cluster: $B" >&2

node_pid() { pgrep -f -- "--set node.id=$1 .*$DIR" | head -1; }
leader_of() { "$BIN" topics describe "$1" --json -b "$B" | jq -r '.partitions[0].leader'; }
isr_size() { "$BIN" topics describe "$1" --json -b "$B" 2>/dev/null | jq -r '.partitions[0].isr | length'; }

"$BIN" topics create bench-rf1 -p 1 -r 1 -c min.insync.replicas=1 -b "$B" >/dev/null
"$BIN" topics create bench-rf3 -p 1 -r 3 -b "$B" >/dev/null
sleep 1

loop=$("$BIN" bench loopback --json | jq -r '.mb_per_s')
run() { "$BIN" bench produce --topic "$1" --acks "$2" --count "$COUNT" --json -b "$B"; }
rf1=$(run bench-rf1 all); rf3=$(run bench-rf3 all); rf3a1=$(run bench-rf3 1)
row() { echo "$1" | jq -r --arg name "$2" --argjson loop "$loop" \
    '"\($name): \(.mb_per_s|floor) MB/s (\((.mb_per_s/$loop*100|floor)/100) x loopback), p99 \(.latency_ms.p99) ms"'; }
echo "loopback TCP: ${loop} MB/s"
row "$rf1" "produce acks=all RF=1"
row "$rf3" "produce acks=all RF=3"
row "$rf3a1" "produce acks=1   RF=3"
echo "RF=3 / RF=1 (acks=all): $(jq -n --argjson a "$rf3" --argjson b "$rf1" '(($a.mb_per_s/$b.mb_per_s)*100|floor)/100')"

# Failover pause.
L=$(leader_of bench-rf3)
kill -9 "$(node_pid "$L")"
t0=$(date +%s.%N)
until echo x | "$BIN" produce -t bench-rf3 --acks all -q -b "$B" 2>/dev/null; do sleep 0.05; done
t1=$(date +%s.%N)
echo "failover pause (kill -9 of the leader -> acks=all produce succeeds): $(echo "$t1 - $t0" | bc) s"

# Catch-up of a restarted follower (the killed leader, now a follower).
until [[ "$(isr_size bench-rf3)" == 2 ]]; do sleep 0.2; done
"$BIN" bench produce --topic bench-rf3 --acks 1 --count $((CATCHUP_MB * 1024)) --json -b "$B" >/dev/null
args=(server --set node.id="$L" --set listeners=PLAINTEXT://127.0.0.1:$((BASE + L - 1)) \
      --set log.dirs="$DIR/node-$L" \
      --set controller.quorum.voters="1@127.0.0.1:$((BASE + 100)),2@127.0.0.1:$((BASE + 101)),3@127.0.0.1:$((BASE + 102))" \
      --set http.listeners= --set default.replication.factor=3 --set min.insync.replicas=2 \
      --set broker.session.timeout.ms=3000 --set broker.heartbeat.interval.ms=500)
t0=$(date +%s.%N)
"$BIN" "${args[@]}" > "$DIR/restarted.out" 2> "$DIR/restarted.err" &
RESTARTED_PID=$!
until [[ "$(isr_size bench-rf3)" == 3 ]]; do sleep 0.1; done
t1=$(date +%s.%N)
secs=$(echo "$t1 - $t0" | bc)
NEW=$(leader_of bench-rf3)
echo "catch-up: ${CATCHUP_MB} MiB in ${secs} s (start included): $(echo "scale=1; $CATCHUP_MB / $secs" | bc) MiB/s"
echo "  restarted node's copy: $(du -sb "$DIR/node-$L/bench-rf3-0" | cut -f1) bytes; leader's: $(du -sb "$DIR/node-$NEW/bench-rf3-0" | cut -f1) bytes"
