#!/usr/bin/env bash
# Runs librdkafka's own integration test suite (tests/test-runner) against a Runnel
# broker or local cluster, as Kafka 4.0 (TEST_KAFKA_VERSION=4.0.0; set TEST_KAFKA_VERSION=4.2.0
# to run the share-consumer tests, 0170-0186). Results: docs/librdkafka-suite.md.
#
#   scripts/librdkafka-suite.sh quick        # a few minutes: the QUICK list below, -Q
#   scripts/librdkafka-suite.sh full         # every non-local, non-sockem test
#   scripts/librdkafka-suite.sh 0011,0081    # these tests (TESTS syntax, comma-separated)
#
# Source: librdkafka 2.15.1 as bundled (deps/librdkafka, tests included) in the npm
# package @confluentinc/kafka-javascript 1.10.1, fetched with `npm pack` (no git or
# GitHub access needed). Built once into $LIBRDKAFKA_DIR (default
# ~/.cache/runnel-librdkafka): needs gcc, g++, make, python3, libssl-dev, zlib1g-dev.
#
# Environment: NODES (default 1; 3 runs `runnel cluster local --nodes 3`, which the tests
# that create replication-factor-3 topics need, with Kafka's default min.insync.replicas=1:
# the tests produce acks=all to RF=1 topics too), RUNNEL_BIN (default:
# target/debug/runnel, built with --no-default-features if missing), LIBRDKAFKA_DIR, TEST_TIMEOUT_MULT (librdkafka's
# test.timeout.multiplier, default 2: shared CI machines are slow), SUITE_TIMEOUT_S
# (whole run, default 900 for quick and 5400 otherwise), KEEP=1 keeps the broker's dir
# (a failed run always keeps it).
set -euo pipefail

MODE="${1:-quick}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
NPM_PACKAGE="@confluentinc/kafka-javascript@1.10.1"
LIBRDKAFKA_VERSION="2.15.1"
DIR="${LIBRDKAFKA_DIR:-$HOME/.cache/runnel-librdkafka}"
SRC="$DIR/librdkafka-$LIBRDKAFKA_VERSION"

# Quick: tests that took seconds each in a full run and cover what clients lean on:
# produce (batches and KIP-467 record errors 0011, acks, compression, headers, purge),
# consume and offsets (seek, commit, reset, lag, partial fetch, fetch limits), consumer
# groups (balanced, subscription changes, commit during rebalance, cooperative
# ordering), idempotence, aborted transactions in fetch, admin basics.
QUICK="0001,0002,0005,0008,0011,0012,0013,0014,0017,0020,0021,0022,0029,0030,0031,0034,0036,0040,0041,0042,0044,0048,0054,0056,0060,0063,0070,0073,0082,0083,0085,0086,0090,0099,0112,0118,0127,0129,0130,0132,0140"

log() { echo "[librdkafka-suite] $*" >&2; }

fetch_source() {
    [ -f "$SRC/tests/Makefile" ] && return
    command -v npm >/dev/null || { log "npm is needed to fetch librdkafka's source"; exit 2; }
    local tmp
    tmp="$(mktemp -d)"
    log "fetching librdkafka $LIBRDKAFKA_VERSION source ($NPM_PACKAGE)"
    (cd "$tmp" && npm pack --silent "$NPM_PACKAGE" >/dev/null && tar xzf ./*.tgz)
    grep -q "define RD_KAFKA_VERSION 0x020f01ff" "$tmp/package/deps/librdkafka/src/rdkafka.h" \
        || { log "unexpected librdkafka version in $NPM_PACKAGE"; exit 2; }
    mkdir -p "$DIR"
    rm -rf "$SRC"
    mv "$tmp/package/deps/librdkafka" "$SRC"
    rm -rf "$tmp"
}

build() {
    [ -x "$SRC/tests/test-runner" ] && return
    log "building librdkafka and its test runner (several minutes, once)"
    (cd "$SRC" && nice ./configure --disable-gssapi --disable-curl >"$DIR/configure.log" 2>&1 \
        && nice make -j"$(nproc)" libs >"$DIR/make.log" 2>&1 \
        && nice make -j"$(nproc)" -C tests test-runner >>"$DIR/make.log" 2>&1) \
        || { log "build failed; see $DIR/configure.log and $DIR/make.log"; exit 2; }
}

runnel_bin() {
    if [ -n "${RUNNEL_BIN:-}" ]; then echo "$RUNNEL_BIN"; return; fi
    local target="${CARGO_TARGET_DIR:-$ROOT/target}"
    if [ ! -x "$target/debug/runnel" ]; then
        log "building runnel (broker only)"
        (cd "$ROOT" && cargo build -q -p runnel --no-default-features) >&2
    fi
    echo "$target/debug/runnel"
}

BROKER_PID=""
WORK=""
cleanup() {
    local rc=$?
    if [ -n "$BROKER_PID" ]; then kill "$BROKER_PID" 2>/dev/null || true; wait "$BROKER_PID" 2>/dev/null || true; fi
    # A failed run keeps its output and broker log: they are the evidence.
    if [ -n "$WORK" ] && [ -z "${KEEP:-}" ] && [ "$rc" = 0 ]; then
        rm -rf "$WORK"
    elif [ -n "$WORK" ] && [ -z "${KEEP:-}" ]; then
        log "the run failed (exit $rc): kept $WORK"
    fi
}
trap cleanup EXIT

BOOTSTRAP=""
# As librdkafka's own test clusters run: an authorizer that lets everyone do what no ACL
# speaks of (0081, 0109, 0115 and 0119 add ACLs with kafka-acls.sh and expect them to bite).
AUTHORIZER=(--set authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
            --set allow.everyone.if.no.acl.found=true)
# As librdkafka's share-consumer clusters (tests/cluster_testing.py, Kafka 4.2+): a group may
# set share.record.lock.duration.ms down to 1 s (0172 and 0173 wait for locks to expire).
SHARE_CONF=(--set group.share.min.record.lock.duration.ms=1000)
start_single() {
    # Kafka's defaults, with num.partitions=4 as librdkafka's test scenarios set
    # (tests/scenarios/default.json: several tests need auto-created topics with more
    # than one partition).
    "$(runnel_bin)" server \
        --set listeners=PLAINTEXT://127.0.0.1:0 \
        --set "log.dirs=$WORK/data" \
        --set http.listeners= \
        --set num.partitions=4 \
        "${AUTHORIZER[@]}" "${SHARE_CONF[@]}" \
        >"$WORK/stdout" 2>"$WORK/broker.log" &
    BROKER_PID=$!
    local port=""
    for _ in $(seq 1 300); do
        port="$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$WORK/stdout" | head -1)"
        [ -n "$port" ] && break
        kill -0 "$BROKER_PID" 2>/dev/null || { log "runnel exited: $(tail -5 "$WORK/broker.log")"; exit 2; }
        sleep 0.1
    done
    [ -n "$port" ] || { log "runnel did not listen within 30 s"; exit 2; }
    BOOTSTRAP="127.0.0.1:$port"
    log "runnel listening on $BOOTSTRAP (log: $WORK/broker.log)"
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start_cluster() {
    local n="$1" base="" tries
    # 2n consecutive free ports (Kafka ports, then quorum ports), below 32768.
    for tries in $(seq 1 50); do
        base=$((20000 + RANDOM % 10000))
        local ok=1 p
        for p in $(seq "$base" $((base + 2 * n - 1))); do port_free "$p" || { ok=0; break; }; done
        [ "$ok" = 1 ] && break
        base=""
    done
    [ -n "$base" ] || { log "no free ports for a $n-node cluster"; exit 2; }
    "$(runnel_bin)" cluster local --nodes "$n" --dir "$WORK/cluster" \
        --base-port "$base" --controller-base-port $((base + n)) --set num.partitions=4 \
        --set min.insync.replicas=1 "${AUTHORIZER[@]}" "${SHARE_CONF[@]}" \
        >"$WORK/stdout" 2>&1 &
    BROKER_PID=$!
    for _ in $(seq 1 900); do
        BOOTSTRAP="$(sed -n 's/^cluster up: bootstrap.servers=//p' "$WORK/stdout" | head -1)"
        [ -n "$BOOTSTRAP" ] && break
        kill -0 "$BROKER_PID" 2>/dev/null || { log "cluster exited: $(tail -5 "$WORK/stdout")"; exit 2; }
        sleep 0.1
    done
    [ -n "$BOOTSTRAP" ] || { log "the cluster did not come up within 90 s"; exit 2; }
    log "runnel $n-node cluster up: $BOOTSTRAP (logs: $WORK/cluster)"
}

fetch_source
build
WORK="$(mktemp -d)"
if [ "${NODES:-1}" -gt 1 ]; then start_cluster "$NODES"; else start_single; fi

case "$MODE" in
    quick) TESTS_LIST="$QUICK"; ARGS=(-Q); LIMIT="${SUITE_TIMEOUT_S:-900}" ;;
    full) TESTS_LIST=""; ARGS=(); LIMIT="${SUITE_TIMEOUT_S:-5400}" ;;
    *) TESTS_LIST="$MODE"; ARGS=(); LIMIT="${SUITE_TIMEOUT_S:-5400}" ;;
esac

RUN="$WORK/run"
mkdir -p "$RUN"
# Some tests (0045, 0052, 0077) run Kafka's bin/kafka-topics.sh ($KAFKA_PATH, $BROKERS):
# a stand-in maps its flags onto `runnel topics`.
mkdir -p "$WORK/kafka/bin"
cat >"$WORK/kafka/bin/kafka-topics.sh" <<EOF
#!/usr/bin/env bash
action=""; topic=""; args=()
while [ \$# -gt 0 ]; do
    case "\$1" in
        --create) action=create ;;
        --alter) action=alter ;;
        --delete) action=delete ;;
        --topic) topic="\$2"; shift ;;
        --partitions|--replication-factor|--bootstrap-server) args+=("\$1" "\$2"); shift ;;
        --config) if [ "\$action" = alter ]; then args+=(--set "\$2"); else args+=(--config "\$2"); fi; shift ;;
        *) echo "kafka-topics.sh stand-in: unsupported argument \$1" >&2; exit 1 ;;
    esac
    shift
done
exec "$(runnel_bin)" topics "\$action" "\${args[@]}" "\$topic"
EOF
chmod +x "$WORK/kafka/bin/kafka-topics.sh"
# 0109, 0115 and 0119 run bin/kafka-acls.sh: `runnel acls` takes its flags.
cat >"$WORK/kafka/bin/kafka-acls.sh" <<EOF
#!/usr/bin/env bash
exec "$(runnel_bin)" acls "\$@"
EOF
chmod +x "$WORK/kafka/bin/kafka-acls.sh"
export KAFKA_PATH="$WORK/kafka" BROKERS="$BOOTSTRAP"
cat >"$RUN/test.conf" <<EOF
metadata.broker.list=$BOOTSTRAP
test.timeout.multiplier=${TEST_TIMEOUT_MULT:-2}
EOF
# The runner reads test.conf from its working directory.
cd "$RUN"
log "running ${MODE} (TESTS=${TESTS_LIST:-all}) with TEST_KAFKA_VERSION=${TEST_KAFKA_VERSION:-4.0.0}, limit ${LIMIT}s"
set +e
LD_LIBRARY_PATH="$SRC/src:$SRC/src-cpp" TEST_KAFKA_VERSION="${TEST_KAFKA_VERSION:-4.0.0}" TESTS="$TESTS_LIST" timeout --signal=TERM "$LIMIT" \
    "$SRC/tests/test-runner" -L -E -p1 "${ARGS[@]}" >"$RUN/output.log" 2>&1
STATUS=$?
set -e
# The runner ends with a table: | <test> | <status> | <seconds> | <reason>
# (rows of tests not selected say DNS, did not start)
sed 's/\x1b\[[0-9;]*m//g' "$RUN/output.log" | grep -E "^\| [0-9]{4}" | grep -vE "\| +DNS +\|" >"$RUN/summary.txt" || true
grep -E "\| +FAILED" "$RUN/summary.txt" >&2 || true
log "summary: $(awk -F'|' '{gsub(/ /,"",$3); print $3}' "$RUN/summary.txt" | sort | uniq -c | tr -s ' \n' ' ')"
cat "$RUN/summary.txt"
log "exit status $STATUS (124 = the suite's time limit); full output: $RUN/output.log"
if [ -n "${KEEP:-}" ]; then log "kept $WORK"; fi
# The runner's own status also counts leaked client threads after a failed test; the
# table is the verdict.
if [ "$STATUS" = 124 ]; then exit 124; fi
if [ ! -s "$RUN/summary.txt" ] || grep -qE "\| +FAILED" "$RUN/summary.txt"; then exit 1; fi
exit 0
