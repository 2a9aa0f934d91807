#!/usr/bin/env bash
# Runnel's one test command: ./scripts/test.sh
#
#   1. cargo build --workspace --bins, then cargo test --workspace (Rust unit/property tests)
#   2. installs what the client suites need, only when missing or outdated:
#        kcat and chromium (Debian packages), a Python venv at $HOME/.cache/runnel-venv with
#        tests/clients/python/requirements.txt, kafkajs and playwright-core in
#        tests/clients/js/node_modules
#   3. runs the client suites against the built broker ($RUNNEL_BIN):
#        pytest tests/clients/python, node --test tests/clients/js/, and librdkafka's own
#        integration tests (quick subset, scripts/librdkafka-suite.sh)
#   4. ends with one line: "clients: N passed, N failed, N skipped" (skipped = known
#      broker gaps marked xfail (strict, or non-strict for a known intermittent bug) or node:test todo), and exits non-zero if anything failed.
#
# Works on a fresh machine with Rust, Python 3.11, Node 20 and gcc; safe to run twice; every
# step is bounded by `timeout`. Environment: CARGO_TARGET_DIR (default
# $HOME/.cache/runnel-target), RUNNEL_VENV (default $HOME/.cache/runnel-venv), and
# PYTEST_ARGS / NODE_TEST_ARGS to pass extra arguments (e.g. PYTEST_ARGS="-k kcat").
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=scripts/lib/common.sh
. "$ROOT/scripts/lib/common.sh"

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/runnel-target}
export RUNNEL_BIN="$CARGO_TARGET_DIR/debug/runnel"
VENV=${RUNNEL_VENV:-$HOME/.cache/runnel-venv}
PY_REQ="$ROOT/tests/clients/python/requirements.txt"
JS_DIR="$ROOT/tests/clients/js"
export PYTHONDONTWRITEBYTECODE=1
export CARGO_TERM_PROGRESS_WHEN=never

STARTED=$(date +%s)
SETUP_FAILURES=()   # what could not be built or installed (each counts as one failed test)
NOTES=()

# ------------------------------------------------------------------ 1. Rust

BUILD_OK=1
step "cargo build --workspace --bins (target dir $CARGO_TARGET_DIR)"
if ! run_bounded 2100 cargo build --workspace --bins; then
  BUILD_OK=0
  SETUP_FAILURES+=("cargo build failed")
fi

RUST_PASSED=0
RUST_FAILED=0
step "cargo test --workspace"
RUST_LOG_FILE=$(mktemp)
run_bounded 1500 cargo test --workspace --no-fail-fast 2>&1 | tee "$RUST_LOG_FILE"
RUST_RC=${PIPESTATUS[0]}
read -r RUST_PASSED RUST_FAILED < <(awk '/^test result:/ {
    for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i }
  } END { print p + 0, f + 0 }' "$RUST_LOG_FILE")
rm -f "$RUST_LOG_FILE"
if [ "$RUST_RC" -ne 0 ] && [ "$RUST_FAILED" -eq 0 ]; then
  SETUP_FAILURES+=("cargo test exited $RUST_RC")
fi

# ------------------------------------------------------------------ 2. client tools

step "client tools: kcat, chromium, Python venv, kafkajs and playwright-core"
if ! ensure_kcat; then SETUP_FAILURES+=("kcat could not be installed"); fi
if ! ensure_chromium; then SETUP_FAILURES+=("chromium could not be installed (the console browser test skips)"); fi
if ! ensure_venv "$VENV" "$PY_REQ"; then SETUP_FAILURES+=("Python venv could not be set up"); fi
if ! ensure_node_modules "$JS_DIR"; then SETUP_FAILURES+=("npm install of kafkajs failed"); fi

# ------------------------------------------------------------------ 3. client suites

PY_PASSED=0 PY_FAILED=0 PY_XFAILED=0
JS_PASSED=0 JS_FAILED=0 JS_TODO=0

if [ "$BUILD_OK" -eq 1 ] && [ ! -x "$RUNNEL_BIN" ]; then
  BUILD_OK=0
  SETUP_FAILURES+=("no runnel binary at $RUNNEL_BIN")
fi

if [ "$BUILD_OK" -eq 1 ] && [ -x "$VENV/bin/python" ]; then
  step "pytest tests/clients/python (confluent-kafka, kafka-python, kcat, raw wire)"
  COUNTS=$(mktemp)
  # shellcheck disable=SC2086
  RUNNEL_PYTEST_COUNTS="$COUNTS" run_bounded 2700 "$VENV/bin/python" -m pytest tests/clients/python \
    -p no:cacheprovider -q -rfEx --durations=8 ${PYTEST_ARGS:-}
  PY_RC=$?
  if [ -s "$COUNTS" ]; then
    read -r PY_PASSED PY_FAILED PY_XFAILED < <("$VENV/bin/python" -c '
import json, sys
c = json.load(open(sys.argv[1]))
print(c["passed"], c["failed"], c["xfailed"])
for r in c["xfail_reasons"]:
    print("  xfail:", r, file=sys.stderr)
' "$COUNTS")
  fi
  rm -f "$COUNTS"
  if [ "$PY_RC" -eq 5 ]; then
    SETUP_FAILURES+=("pytest collected no tests (exit 5)")
  elif [ "$PY_RC" -ne 0 ] && [ "$PY_FAILED" -eq 0 ]; then
    SETUP_FAILURES+=("pytest exited $PY_RC without a failed test (interrupted, timed out or crashed)")
  fi
  if [ $((PY_PASSED + PY_FAILED + PY_XFAILED)) -eq 0 ] && [ "$PY_RC" -ne 5 ]; then
    SETUP_FAILURES+=("pytest ran no test")
  fi
else
  NOTES+=("pytest not run")
fi

if [ "$BUILD_OK" -eq 1 ] && [ -d "$JS_DIR/node_modules/kafkajs" ]; then
  step "node --test tests/clients/js/ (kafkajs)"
  JS_LOG=$(mktemp)
  # shellcheck disable=SC2086
  run_bounded 420 node --test --test-reporter=tap ${NODE_TEST_ARGS:-} tests/clients/js/ 2>&1 | tee "$JS_LOG"
  JS_RC=${PIPESTATUS[0]}
  JS_PASSED=$(awk '/^# pass / {print $3}' "$JS_LOG" | tail -1)
  JS_FAILED=$(awk '/^# fail / {print $3}' "$JS_LOG" | tail -1)
  JS_TODO=$(awk '/^# todo / {print $3}' "$JS_LOG" | tail -1)
  JS_PASSED=${JS_PASSED:-0} JS_FAILED=${JS_FAILED:-0} JS_TODO=${JS_TODO:-0}
  rm -f "$JS_LOG"
  # node counts a todo test (pending: known broker gap) under "todo", not "pass" or "fail".
  if [ "$JS_RC" -ne 0 ] && [ "$JS_FAILED" -eq 0 ]; then
    SETUP_FAILURES+=("node --test exited $JS_RC without a failed test")
  fi
  if [ $((JS_PASSED + JS_FAILED)) -eq 0 ]; then
    SETUP_FAILURES+=("node --test ran no test")
  fi
else
  NOTES+=("node --test not run")
fi

# ------------------------------------------------------------------ 3b. librdkafka's suite

# librdkafka's own integration tests, the quick subset (docs/librdkafka-suite.md): built
# once into ~/.cache/runnel-librdkafka (several minutes), then about 3 minutes a run.
# RUNNEL_LIBRDKAFKA_SUITE=0 skips it (noted in the summary).
LRK_PASSED=0 LRK_FAILED=0
if [ "${RUNNEL_LIBRDKAFKA_SUITE:-1}" = 0 ]; then
  NOTES+=("librdkafka suite skipped (RUNNEL_LIBRDKAFKA_SUITE=0)")
elif [ "$BUILD_OK" -eq 1 ]; then
  step "librdkafka's own test suite, quick subset (scripts/librdkafka-suite.sh quick)"
  if ! ensure_librdkafka_build_deps; then
    SETUP_FAILURES+=("librdkafka's build dependencies could not be installed")
  else
    LRK_LOG=$(mktemp)
    RUNNEL_BIN="$RUNNEL_BIN" SUITE_TIMEOUT_S=900 run_bounded 2400 bash scripts/librdkafka-suite.sh quick 2>&1 | tee "$LRK_LOG"
    LRK_RC=${PIPESTATUS[0]}
    # The script prints failed rows twice (stderr, then the table): count rows once.
    LRK_PASSED=$(grep -E "^\| [0-9]{4}.*\| +PASSED" "$LRK_LOG" | sort -u | wc -l)
    LRK_FAILED=$(grep -E "^\| [0-9]{4}.*\| +FAILED" "$LRK_LOG" | sort -u | wc -l)
    rm -f "$LRK_LOG"
    if [ "$LRK_RC" -ne 0 ] && [ "$LRK_FAILED" -eq 0 ]; then
      SETUP_FAILURES+=("librdkafka suite exited $LRK_RC without a failed test (build, start-up or time limit)")
    fi
  fi
fi

# ------------------------------------------------------------------ 4. summary

ELAPSED=$(( $(date +%s) - STARTED ))
echo
echo "=== summary ($((ELAPSED / 60))m$((ELAPSED % 60))s) ==="
echo "rust (cargo test):  passed=$RUST_PASSED failed=$RUST_FAILED"
echo "python (pytest):    passed=$PY_PASSED failed=$PY_FAILED xfailed=$PY_XFAILED (known broker gaps, strict)"
echo "js (node --test):   passed=$JS_PASSED failed=$JS_FAILED todo=$JS_TODO"
echo "librdkafka suite:   passed=$LRK_PASSED failed=$LRK_FAILED"
for n in "${NOTES[@]+"${NOTES[@]}"}"; do echo "note: $n"; done
for f in "${SETUP_FAILURES[@]+"${SETUP_FAILURES[@]}"}"; do echo "FAILED: $f"; done

PASSED=$((PY_PASSED + JS_PASSED + LRK_PASSED))
FAILED=$((PY_FAILED + JS_FAILED + LRK_FAILED + ${#SETUP_FAILURES[@]}))
SKIPPED=$((PY_XFAILED + JS_TODO))
STATUS=0
if [ "$FAILED" -ne 0 ] || [ "$RUST_FAILED" -ne 0 ] || [ "$PASSED" -eq 0 ]; then
  STATUS=1
fi
echo "clients: $PASSED passed, $FAILED failed, $SKIPPED skipped"
exit "$STATUS"
