#!/usr/bin/env bash
# The README's commands from a clean checkout, as a newcomer runs them (issue 16):
#
#   ./scripts/readme-check.sh [--all] [--keep]
#
#   1. `git clone` of this checkout's HEAD (committed work only) into a temp dir, with a
#      temp HOME and a temp CARGO_TARGET_DIR: nothing built before is reused;
#   2. the README's first command (`cargo run --release ... -- server`), under `nice`:
#      it must build from scratch and print `listening on 127.0.0.1:PORT`, with its data in
#      ./runnel-data. Prints the build's wall and CPU time, the load average, and the
#      binary's size before and after `strip`;
#   3. the README's second command (`./scripts/test.sh`): with --all it runs (an hour or
#      more), otherwise it is only checked to be there and to parse (`bash -n`);
#   4. tests/clients/python/test_readme.py (the quickstart's commands: kcat, the local
#      cluster, the streaming SQL demo) with the binary just built as $RUNNEL_BIN.
#
# The README's ports (9092, 9644) are replaced by free ones chosen here, so the check runs
# beside another broker. Rust's toolchain and crate cache stay the machine's (RUSTUP_HOME,
# CARGO_HOME): downloading crates is not what is measured. The quick form of step 4 runs in
# the default test run (./scripts/test.sh) against the binary that run builds.
# Exit status: 0 when every step printed what the README says.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ALL=0
KEEP=0
for a in "$@"; do
  case "$a" in
    --all) ALL=1 ;;
    --keep) KEEP=1 ;;
    *) echo "usage: $0 [--all] [--keep]" >&2; exit 2 ;;
  esac
done

REAL_HOME=$HOME
export RUSTUP_HOME=${RUSTUP_HOME:-$REAL_HOME/.rustup}
export CARGO_HOME=${CARGO_HOME:-$REAL_HOME/.cargo}
VENV=${RUNNEL_VENV:-$REAL_HOME/.cache/runnel-venv}
TMP=$(mktemp -d /tmp/readme-check.XXXXXX)
SERVER_PID=
cleanup() {
  if [ -n "$SERVER_PID" ]; then kill -TERM -- "-$SERVER_PID" 2>/dev/null; fi
  if [ "$KEEP" -eq 0 ]; then rm -rf "$TMP"; else echo "kept $TMP"; fi
}
trap cleanup EXIT
fail() { echo "readme-check: FAILED: $*" >&2; exit 1; }
say() { echo "readme-check: $*"; }

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# 1. A clean checkout in a fresh environment.
git clone --quiet "$ROOT" "$TMP/runnel" || fail "git clone $ROOT"
mkdir -p "$TMP/home"
export HOME=$TMP/home
export CARGO_TARGET_DIR=$TMP/target
cd "$TMP/runnel" || fail "cd $TMP/runnel"
say "clone of $(git rev-parse --short HEAD) in $TMP/runnel, HOME=$HOME, CARGO_TARGET_DIR=$CARGO_TARGET_DIR"

# The README's first code block: its first two commands, without their comments.
mapfile -t FIRST < <(awk '/^```sh$/ {n++; next} /^```/ {if (n == 1) exit} n == 1 && NF' README.md |
  sed 's/ *#.*//' | head -2)
[ "${#FIRST[@]}" -eq 2 ] || fail "README.md: no first sh block with two commands"
say "README command 1: ${FIRST[0]}"
say "README command 2: ${FIRST[1]}"
case "${FIRST[0]}" in
  "cargo run "*" -- server"*) ;;
  *) fail "the README's first command is no longer 'cargo run ... -- server': update this script" ;;
esac

# 2. The first command: build from scratch, then the server's first line.
PORT=$(free_port)
HTTP_PORT=$(free_port)
LOG=$TMP/first-command.log
START=$(date +%s)
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
# Its own process group, so that stopping it stops cargo and the server under it.
# shellcheck disable=SC2086
setsid /usr/bin/time -f '%e %U %S' -o "$TMP/time" nice ${FIRST[0]} \
  --set "listeners=PLAINTEXT://127.0.0.1:$PORT" --set "http.listeners=127.0.0.1:$HTTP_PORT" \
  >"$TMP/server.out" 2>"$LOG" &
SERVER_PID=$!
while ! grep -q '^listening on ' "$TMP/server.out" 2>/dev/null; do
  kill -0 "$SERVER_PID" 2>/dev/null || { tail -30 "$LOG" >&2; fail "the first command exited before listening"; }
  [ $(($(date +%s) - START)) -lt 7200 ] || fail "no 'listening on' within 2 h"
  sleep 2
done
BUILD_S=$(($(date +%s) - START))
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
LINE=$(head -1 "$TMP/server.out")
[ "$LINE" = "listening on 127.0.0.1:$PORT" ] || fail "first line '$LINE', expected 'listening on 127.0.0.1:$PORT'"
[ -d runnel-data ] || fail "no ./runnel-data after the server started (the README says data in ./runnel-data)"
# SIGTERM to the server alone (as Ctrl-C would reach it): cargo then exits with its status.
for p in $(pgrep -g "$SERVER_PID"); do
  [ "$(readlink "/proc/$p/exe" 2>/dev/null)" = "$CARGO_TARGET_DIR/release/runnel" ] && kill -TERM "$p"
done
wait "$SERVER_PID" || fail "the first command exited $? after SIGTERM (expected a clean stop)"
SERVER_PID=
read -r _ USER_S SYS_S <"$TMP/time" || true
BIN=$CARGO_TARGET_DIR/release/runnel
[ -x "$BIN" ] || fail "no $BIN"
cp "$BIN" "$TMP/runnel.stripped" && strip "$TMP/runnel.stripped"
say "first command: '$LINE' after ${BUILD_S} s (build and start; CPU $(printf '%.0f' "${USER_S:-0}") s user + $(printf '%.0f' "${SYS_S:-0}") s system, under nice)"
say "load average: $LOAD_BEFORE at the start, $LOAD_AFTER at the end ($(nproc) CPUs)"
say "binary: $(du -m "$BIN" | cut -f1) MB, stripped $(du -m "$TMP/runnel.stripped" | cut -f1) MB ($BIN)"

# 3. The second command.
if [ "${FIRST[1]}" != "./scripts/test.sh" ]; then
  fail "the README's second command is '${FIRST[1]}', not ./scripts/test.sh: update this script"
fi
[ -x scripts/test.sh ] && bash -n scripts/test.sh || fail "scripts/test.sh is not an executable bash script"
if [ "$ALL" -eq 1 ]; then
  say "running ./scripts/test.sh (long)"
  RUNNEL_VENV=$VENV ./scripts/test.sh || fail "./scripts/test.sh"
else
  say "./scripts/test.sh is there and parses (--all runs it)"
fi

# 4. The quickstart's commands, against the binary just built.
[ -x "$VENV/bin/python" ] || fail "no Python venv at $VENV (RUNNEL_VENV; ./scripts/test.sh makes it)"
RUNNEL_BIN=$BIN timeout 600 "$VENV/bin/python" -m pytest -q -p no:cacheprovider \
  tests/clients/python/test_readme.py || fail "tests/clients/python/test_readme.py"
say "every README command printed what the README says"
