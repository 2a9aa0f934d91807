# Shell helpers shared by scripts/*.sh. Source it; it defines functions only.
# shellcheck shell=bash

step() {
  echo
  echo "=== $* ==="
}

# run_bounded SECONDS CMD...: run CMD, sending SIGTERM (then SIGKILL 30 s later) to its whole
# process group if it runs longer than SECONDS. Returns CMD's status (124 on time-out).
run_bounded() {
  local limit=$1
  shift
  timeout --kill-after=30s "$limit" "$@"
  local rc=$?
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    echo "error: '$*' did not finish within ${limit}s" >&2
  fi
  return "$rc"
}

# as_root CMD...: run CMD as root (directly when we are root, else with sudo -n).
as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo -n "$@"
  else
    echo "error: need root (or sudo) to run: $*" >&2
    return 1
  fi
}

apt_install() {
  local log rc
  log=$(mktemp)
  as_root env DEBIAN_FRONTEND=noninteractive timeout 300 apt-get update -qq </dev/null >"$log" 2>&1 \
    && as_root env DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq --no-install-recommends "$@" \
      </dev/null >>"$log" 2>&1
  rc=$?
  if [ "$rc" -ne 0 ]; then
    echo "error: apt-get install $* failed:" >&2
    tail -20 "$log" >&2
  fi
  rm -f "$log"
  return "$rc"
}

# kcat (Debian's, librdkafka 2.0.2): install when missing.
ensure_kcat() {
  if command -v kcat >/dev/null 2>&1; then
    echo "kcat: $(kcat -V 2>&1 | grep -o 'Version [^ ]*' | head -1) already installed"
    return 0
  fi
  echo "kcat: installing with apt-get"
  apt_install kcat && command -v kcat >/dev/null 2>&1
}

# chromium (Debian's) for the web console's browser test (tests/clients/js/console.test.js,
# driven by playwright-core with this browser; no browser download): install when missing.
ensure_chromium() {
  command -v chromium >/dev/null 2>&1 && { echo "chromium: already installed"; return 0; }
  echo "chromium: installing with apt-get"
  apt_install chromium && command -v chromium >/dev/null 2>&1
}

_sha256() {
  sha256sum "$@" | awk '{print $1}' | sha256sum | awk '{print $1}'
}

# ensure_venv DIR REQUIREMENTS: a venv at DIR with REQUIREMENTS installed. Reinstalls only
# when the requirements file or the Python version changed, or the venv is broken.
ensure_venv() {
  local venv=$1 req=$2 py stamp want
  py=$(command -v python3.11 || command -v python3) || { echo "error: no python3" >&2; return 1; }
  want="$(_sha256 "$req") $("$py" -c 'import sys; print(sys.version.split()[0])')"
  stamp="$venv/.runnel-requirements"
  if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] \
     && "$venv/bin/python" -c 'import confluent_kafka, kafka, pytest' >/dev/null 2>&1; then
    echo "venv: $venv up to date"
    return 0
  fi
  echo "venv: (re)creating $venv with $(basename "$req")"
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  if ! "$py" -m venv "$venv"; then
    echo "venv: python -m venv failed; installing python3-venv" >&2
    apt_install python3-venv python3-pip && py=/usr/bin/python3 && "$py" -m venv "$venv" || return 1
  fi
  timeout 900 "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$req" </dev/null || return 1
  echo "$want" >"$stamp"
  "$venv/bin/python" -c 'import confluent_kafka, importlib.metadata as m
print("venv: confluent-kafka", m.version("confluent-kafka"), "(librdkafka", confluent_kafka.libversion()[0] + "),",
      "kafka-python", m.version("kafka-python") + ",", "pytest", m.version("pytest"))'
}

# ensure_node_modules DIR: `npm ci` in DIR when node_modules is missing or older than package-lock.json.
ensure_node_modules() {
  local dir=$1 want stamp
  command -v npm >/dev/null 2>&1 || { echo "error: npm not found" >&2; return 1; }
  want=$(_sha256 "$dir/package.json" "$dir/package-lock.json")
  stamp="$dir/node_modules/.runnel-lock"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -f "$dir/node_modules/kafkajs/package.json" ]; then
    echo "npm: $dir/node_modules up to date"
    return 0
  fi
  echo "npm: npm ci in $dir"
  (cd "$dir" && timeout 600 npm ci --no-audit --no-fund --loglevel=error </dev/null) || return 1
  echo "$want" >"$stamp"
  echo "npm: kafkajs $(node -p "require('$dir/node_modules/kafkajs/package.json').version")"
}

# What scripts/librdkafka-suite.sh needs to build librdkafka's test runner, installed
# only while the runner is not built yet.
ensure_librdkafka_build_deps() {
  if [ -x "${LIBRDKAFKA_DIR:-$HOME/.cache/runnel-librdkafka}/librdkafka-2.15.1/tests/test-runner" ]; then
    return 0
  fi
  if dpkg -s libssl-dev zlib1g-dev g++ make >/dev/null 2>&1; then
    return 0
  fi
  echo "librdkafka: installing build dependencies with apt-get"
  apt_install libssl-dev zlib1g-dev g++ make
}
