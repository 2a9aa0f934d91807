#!/usr/bin/env bash
# Runnel's benchmark. In one run it measures this machine's baselines (raw TCP over
# loopback, raw sequential disk writes with and without fdatasync) and Runnel's produce,
# consume and end-to-end figures, and prints each figure with its ratio to the baselines.
# The produce round trip is measured at full speed and at 50 % and 80 % of it
# (`runnel bench produce --rate`).
#
#   scripts/bench.sh                      # about 2-4 minutes on a small machine
#   BENCH_COUNT=200000 scripts/bench.sh   # quicker
#
# Knobs (environment): BENCH_COUNT records per run (1 KiB each, default 500000),
# BENCH_E2E_RATE records/s for the end-to-end run (default 10000), BENCH_E2E_SECS (10),
# BENCH_STEP_TIMEOUT seconds per step (180), BENCH_JSON a file to append every raw JSON
# result to, BENCH_DIR the broker's data directory (default: a new temp dir, removed).
# Needs jq. The broker is started here and killed on exit, whatever happens.
set -euo pipefail

cd "$(dirname "$0")/.."
COUNT=${BENCH_COUNT:-500000}
E2E_RATE=${BENCH_E2E_RATE:-10000}
E2E_SECS=${BENCH_E2E_SECS:-10}
STEP_TIMEOUT=${BENCH_STEP_TIMEOUT:-180}
RECORD_SIZE=1024

command -v jq >/dev/null || { echo "bench.sh needs jq (apt-get install jq)" >&2; exit 1; }

echo "building runnel (release)..." >&2
# The broker and tools only: the SQL engine (default feature) is not what is measured.
cargo build --release -p runnel --no-default-features >&2
BIN="${CARGO_TARGET_DIR:-target}/release/runnel"

if [[ -n "${BENCH_DIR:-}" ]]; then
    DATA=$BENCH_DIR; KEEP_DATA=1; mkdir -p "$DATA"
else
    DATA=$(mktemp -d -t runnel-bench.XXXXXX); KEEP_DATA=0
fi
LOGS=$(mktemp -d -t runnel-bench-logs.XXXXXX)
BROKER_PID=
cleanup() {
    if [[ -n "$BROKER_PID" ]]; then
        kill "$BROKER_PID" 2>/dev/null || true
        # A broker that ignores SIGTERM for 10 s is killed.
        for _ in $(seq 100); do kill -0 "$BROKER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$BROKER_PID" 2>/dev/null || true
        wait "$BROKER_PID" 2>/dev/null || true
    fi
    [[ $KEEP_DATA == 1 ]] || rm -rf "$DATA"
    rm -rf "$LOGS"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$BIN" server --set listeners=PLAINTEXT://127.0.0.1:0 --set "log.dirs=$DATA/log" \
    >"$LOGS/server.out" 2>"$LOGS/server.err" &
BROKER_PID=$!
ADDR=
for _ in $(seq 300); do
    ADDR=$(sed -n 's/^listening on //p' "$LOGS/server.out" | head -n1)
    [[ -n "$ADDR" ]] && break
    kill -0 "$BROKER_PID" 2>/dev/null || break
    sleep 0.1
done
if [[ -z "$ADDR" ]]; then
    echo "the broker did not start; its log:" >&2
    cat "$LOGS/server.err" >&2
    exit 1
fi
echo "broker on $ADDR, data in $DATA" >&2

# Runs one bench step with a time limit; prints its JSON object, or nothing on failure.
step() {
    local out
    # Start each step with no dirty pages left by the previous one.
    sync
    if out=$(timeout "$STEP_TIMEOUT" "$BIN" bench "$@" --json); then
        [[ -n "${BENCH_JSON:-}" ]] && echo "$out" >>"$BENCH_JSON"
        echo "$out"
    else
        echo "step failed: runnel bench $* (exit $?); broker log tail:" >&2
        tail -n 20 "$LOGS/server.err" >&2
    fi
}
field() { jq -r "$2 // empty" <<<"$1"; }
ratio() {
    if [[ -n "$1" && -n "$2" ]]; then
        awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'
    else
        echo "-"
    fi
}
fmt() {
    if [[ -n "$1" ]]; then awk -v v="$1" -v p="${2:-1}" 'BEGIN { printf "%.*f", p, v }'; else echo "-"; fi
}

echo "== baselines" >&2
# The ceiling: best of three loopback runs (short runs on a busy machine vary).
LOOP_MBS=
for _ in 1 2 3; do
    LOOP=$(step loopback --record-size $RECORD_SIZE --count "$COUNT")
    m=$(field "$LOOP" .mb_per_s)
    if [[ -n "$m" ]] && awk -v a="$m" -v b="${LOOP_MBS:-0}" 'BEGIN { exit !(a > b) }'; then LOOP_MBS=$m; fi
done
DISK=$(step disk --dir "$DATA" --record-size $RECORD_SIZE --count "$COUNT" --sync-every-mib 1)
DISK_MBS=$(field "$DISK" .no_sync_mb_per_s)
DISK_SYNC_MBS=$(field "$DISK" .sync_mb_per_s)
DISK1_MBS=$DISK_MBS DISK1_SYNC_MBS=$DISK_SYNC_MBS

NAMES=()
RESULTS=()
add_row() { # name json; formatted at the end, when every baseline is known
    NAMES+=("$1")
    RESULTS+=("${2:-}")
}
print_row() { # name json
    local name=$1 j=$2 mbs
    mbs=$(field "$j" .mb_per_s)
    printf '%-34s %12s %9s %7s %7s %7s  %8s %8s %8s %8s\n' "$name" \
        "$(fmt "$(field "$j" .records_per_s)" 0)" "$(fmt "$mbs")" \
        "$(ratio "$mbs" "$LOOP_MBS")" "$(ratio "$mbs" "$DISK_MBS")" "$(ratio "$mbs" "$DISK_SYNC_MBS")" \
        "$(fmt "$(field "$j" .latency_ms.p50)" 3)" "$(fmt "$(field "$j" .latency_ms.p99)" 3)" \
        "$(fmt "$(field "$j" .latency_ms.p999)" 3)" "$(fmt "$(field "$j" .latency_ms.max)" 3)"
}

echo "== produce, $COUNT records of $RECORD_SIZE B per run" >&2
BEST_PRODUCE=
for parts in 1 16; do
    for acks in 1 all; do
        echo "produce: $parts partition(s), acks=$acks" >&2
        J=$(step produce -b "$ADDR" --topic "bench-p$parts-acks$acks" --partitions "$parts" --acks "$acks" --keep-topic \
            --record-size $RECORD_SIZE --count "$COUNT")
        add_row "produce ${parts}p acks=$acks" "$J"
        [[ $parts == 1 && $acks == 1 ]] && MAX_RATE=$(field "$J" .records_per_s)
        if [[ $acks == 1 ]]; then
            m=$(field "$J" .mb_per_s)
            if [[ -n "$m" ]] && awk -v a="$m" -v b="${BEST_PRODUCE:-0}" 'BEGIN { exit !(a > b) }'; then BEST_PRODUCE=$m; fi
        fi
    done
done

# The produce round trip under load: a fixed rate at 50 % and 80 % of the unlimited 1p
# acks=1 rate above (that run is the 100 % row).
if [[ -n "${MAX_RATE:-}" ]]; then
    for pct in 50 80; do
        rate=$(awk -v r="$MAX_RATE" -v p="$pct" 'BEGIN { printf "%d", r * p / 100 }')
        echo "produce: 1 partition, acks=1, at $pct % load ($rate records/s)" >&2
        J=$(step produce -b "$ADDR" --topic "bench-load$pct" --partitions 1 --acks 1 \
            --record-size $RECORD_SIZE --duration-secs 5 --rate "$rate")
        # What the run reached: 5 s of writes can outrun what the page cache takes
        # (dirty-page throttling), so the schedule is not always kept.
        reached=$(awk -v g="$(field "$J" .records_per_s)" -v m="$MAX_RATE" 'BEGIN { if (g != "" && m > 0) printf "%.0f", 100 * g / m; else print "?" }')
        add_row "produce 1p acks=1 $pct % (got $reached %)" "$J"
    done
fi

echo "== consume" >&2
for parts in 1 16; do
    J=$(step consume -b "$ADDR" --topic "bench-p$parts-acks1" --partitions "$parts" \
        --record-size $RECORD_SIZE --count "$COUNT")
    add_row "consume ${parts}p (fetch latency)" "$J"
done

echo "== end to end at $E2E_RATE records/s for $E2E_SECS s" >&2
E2E_P99=
for acks in 1 all; do
    J=$(step e2e -b "$ADDR" --topic "bench-e2e-acks$acks" --partitions 1 --acks "$acks" \
        --record-size $RECORD_SIZE --rate "$E2E_RATE" --duration-secs "$E2E_SECS")
    add_row "e2e ${E2E_RATE}/s acks=$acks" "$J"
    if [[ $acks == 1 ]]; then E2E_P99=$(field "$J" .latency_ms.p99); fi
done

# The page-cache write rate of a VM drifts with memory pressure: measure it again at the
# end, and compare Runnel with the mean of the two.
echo "== baselines again" >&2
DISK2=$(step disk --dir "$DATA" --record-size $RECORD_SIZE --count "$COUNT" --sync-every-mib 1)
DISK2_MBS=$(field "$DISK2" .no_sync_mb_per_s)
DISK2_SYNC_MBS=$(field "$DISK2" .sync_mb_per_s)
mean() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "") print b; else if (b == "") print a; else print (a + b) / 2 }'; }
DISK_MBS=$(mean "$DISK1_MBS" "$DISK2_MBS")
DISK_SYNC_MBS=$(mean "$DISK1_SYNC_MBS" "$DISK2_SYNC_MBS")

echo
echo "Runnel benchmark, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, records of $RECORD_SIZE B; MB = 10^6 bytes"
echo "baselines measured in this run:"
printf '  %-44s %9s MB/s\n' "loopback TCP, 1 connection, best of 3" "$(fmt "$LOOP_MBS")"
printf '  %-44s %9s MB/s  (start %s, end %s)\n' "sequential write, page cache" "$(fmt "$DISK_MBS")" \
    "$(fmt "$DISK1_MBS")" "$(fmt "$DISK2_MBS")"
printf '  %-44s %9s MB/s  (start %s, end %s)\n' "sequential write, fdatasync every 1 MiB" \
    "$(fmt "$DISK_SYNC_MBS")" "$(fmt "$DISK1_SYNC_MBS")" "$(fmt "$DISK2_SYNC_MBS")"
echo
printf '%-34s %12s %9s %7s %7s %7s  %8s %8s %8s %8s\n' "figure" "records/s" "MB/s" "/loop" "/disk" "/dsync" \
    "p50 ms" "p99 ms" "p99.9 ms" "max ms"
for i in "${!NAMES[@]}"; do print_row "${NAMES[$i]}" "${RESULTS[$i]}"; done
echo
echo "/loop, /disk, /dsync: the figure's MB/s divided by loopback TCP, page-cache writes, fdatasync'd writes."
echo "Latency: produce = request sent to acknowledged; consume = fetch round trip; e2e = record built to consumer decoded."
echo "aims:"
printf '  produce throughput >= 0.5 x loopback: best acks=1 produce is %s x loopback\n' "$(ratio "$BEST_PRODUCE" "$LOOP_MBS")"
printf '  e2e p99 < 5 ms at a moderate load: p99 at %s records/s, acks=1 is %s ms\n' "$E2E_RATE" "$(fmt "$E2E_P99" 3)"
