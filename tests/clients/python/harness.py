"""Start, stop, kill and restart a Runnel broker for the client suites.

The broker is `$RUNNEL_BIN server`, always on 127.0.0.1 with a port it picks itself
(port 0); it prints exactly one stdout line `listening on 127.0.0.1:PORT` when ready.
Its stderr goes to a log file next to its data dir, shown when a test fails.
"""

import ctypes
import os
import re
import select
import signal
import subprocess
import threading
import time
import uuid

LISTENING = re.compile(r"^listening on 127\.0\.0\.1:(\d+)\s*$")
START_TIMEOUT_S = 30
STOP_TIMEOUT_S = 20

_libc = None


def _die_with_parent():
    """In the child: get SIGKILL when the test process dies, so no broker outlives a
    killed or timed-out test run."""
    global _libc
    try:
        if _libc is None:
            _libc = ctypes.CDLL("libc.so.6", use_errno=True)
        PR_SET_PDEATHSIG = 1
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass


def runnel_bin():
    path = os.environ.get("RUNNEL_BIN")
    if not path:
        raise RuntimeError("RUNNEL_BIN is not set (scripts/test.sh sets it to the built runnel binary)")
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"RUNNEL_BIN={path} is not an executable file")
    return path


def pick_binary():
    """For the scripts: $RUNNEL_BIN, else the release build, else the debug build under
    $CARGO_TARGET_DIR (default ~/.cache/runnel-target); returns (path, which)."""
    if os.environ.get("RUNNEL_BIN"):
        return os.environ["RUNNEL_BIN"], "RUNNEL_BIN"
    target = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/runnel-target"))
    for profile in ("release", "debug"):
        path = os.path.join(target, profile, "runnel")
        if os.access(path, os.X_OK):
            return path, profile
    raise SystemExit(f"no runnel binary under {target}/release or {target}/debug; build it first")


def unique(prefix="t"):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


class BrokerError(AssertionError):
    pass


class Broker:
    """One broker process on one data dir. Restartable on the same data dir."""

    def __init__(self, workdir, configs=None, name="broker"):
        self.workdir = str(workdir)
        self.data_dir = os.path.join(self.workdir, "data")
        os.makedirs(self.data_dir, exist_ok=True)
        self.configs = dict(configs or {})
        self.name = name
        self.proc = None
        self.port = None
        self.starts = 0
        self.log_path = None
        self.expected_exit = True

    # ------------------------------------------------------------ lifecycle

    def argv(self):
        args = [runnel_bin(), "server",
                "--set", "listeners=PLAINTEXT://127.0.0.1:0",
                "--set", f"log.dirs={self.data_dir}"]
        for k, v in self.configs.items():
            args += ["--set", f"{k}={v}"]
        return args

    def start(self):
        self.launch()
        return self.await_ready()

    def launch(self):
        """Starts the process without waiting for it to listen (cluster nodes wait for
        their quorum, so a cluster launches every node before waiting for any)."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.starts += 1
        self.log_path = os.path.join(self.workdir, f"{self.name}.{self.starts}.log")
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            self.argv(), stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent, env={**os.environ, "RUST_BACKTRACE": "1"})
        log.close()
        self.expected_exit = False
        return self

    def await_ready(self):
        line = self._read_first_line(START_TIMEOUT_S)
        m = LISTENING.match(line)
        if not m:
            self.kill9()
            raise BrokerError(f"first stdout line was {line!r}, expected 'listening on 127.0.0.1:PORT'\n"
                              + self.log_tail())
        self.port = int(m.group(1))
        assert self.port != 0
        # Drain anything else on stdout so the broker never blocks on a full pipe.
        out = self.proc.stdout
        extra_path = os.path.join(self.workdir, f"{self.name}.{self.starts}.stdout")

        def drain():
            with open(extra_path, "wb") as f:
                for chunk in iter(lambda: out.read1(4096), b""):
                    f.write(chunk)
                    f.flush()
        threading.Thread(target=drain, daemon=True).start()
        return self

    def _read_first_line(self, timeout):
        fd = self.proc.stdout.fileno()
        buf = b""
        deadline = time.monotonic() + timeout
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0:
                self.kill9()
                raise BrokerError(f"broker printed no 'listening on' line within {timeout}s\n" + self.log_tail())
            r, _, _ = select.select([fd], [], [], min(left, 0.5))
            if r:
                chunk = os.read(fd, 4096)
                if not chunk:
                    code = self.proc.wait()
                    raise BrokerError(f"broker exited with {code} before listening; stdout={buf!r}\n"
                                      + self.log_tail())
                buf += chunk
        first, _, rest = buf.partition(b"\n")
        assert not rest.strip(), f"broker printed more than one line at start-up: {buf!r}"
        return first.decode(errors="replace")

    @property
    def bootstrap(self):
        assert self.port, "broker not started"
        return f"127.0.0.1:{self.port}"

    @property
    def address(self):
        return ("127.0.0.1", self.port)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill9(self):
        """SIGKILL and reap."""
        if self.proc is not None and self.proc.poll() is None:
            self.expected_exit = True
            self.proc.kill()
            self.proc.wait(10)
        self.port = None

    def terminate(self):
        """SIGTERM; the broker must exit 0 within STOP_TIMEOUT_S. Returns the exit code."""
        assert self.alive(), "broker is not running\n" + self.log_tail()
        self.expected_exit = True
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise BrokerError(f"broker did not exit within {STOP_TIMEOUT_S}s of SIGTERM\n" + self.log_tail())
        self.port = None
        return code

    def restart(self, kill=False):
        if kill:
            self.kill9()
        elif self.alive():
            code = self.terminate()
            assert code == 0, f"broker exited {code} on SIGTERM\n" + self.log_tail()
        return self.start()

    def stop(self):
        """Teardown: stop whatever runs; report an unexpected death or a panic."""
        problems = []
        if self.proc is not None:
            if self.proc.poll() is not None and not self.expected_exit:
                problems.append(f"broker died unexpectedly with exit code {self.proc.returncode}")
            if self.proc.poll() is None:
                self.expected_exit = True
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(10)
                    problems.append(f"broker did not exit within {STOP_TIMEOUT_S}s of SIGTERM")
        panics = self.panics()
        if panics:
            problems.append("broker log shows a panic:\n" + "\n".join(panics[:5]))
        return problems

    # ------------------------------------------------------------ logs

    def log_files(self):
        return sorted(os.path.join(self.workdir, f) for f in os.listdir(self.workdir)
                      if f.startswith(self.name + ".") and f.endswith(".log"))

    def panics(self):
        found = []
        for path in self.log_files():
            with open(path, "rb") as f:
                for line in f.read().decode(errors="replace").splitlines():
                    if "panicked at" in line:
                        found.append(f"{os.path.basename(path)}: {line.strip()}")
        return found

    def log_tail(self, n=40):
        if not self.log_path or not os.path.exists(self.log_path):
            return "(no broker log)"
        with open(self.log_path, "rb") as f:
            lines = f.read().decode(errors="replace").splitlines()
        return f"--- last {min(n, len(lines))} lines of {self.log_path} ---\n" + "\n".join(lines[-n:])
