"""Fixtures for the Python client suite.

- `broker`: one broker for the whole test module (default configuration).
- `start_broker(**configs)`: a fresh broker on its own data dir, with extra `--set`
  configs (dots in keys written as `__`, or pass a dict as `configs=`); the returned
  Broker can `kill9()`, `terminate()` and `restart()` on the same data dir.
Every broker is stopped at teardown, and a broker that died unexpectedly or logged a
panic fails the test (or the module) that used it.

Every test is bounded in time: `@pytest.mark.timeout_s(N)` (default 60 s) arms SIGALRM,
which raises in the test; faulthandler_timeout in pytest.ini dumps stacks as a backstop.
"""

import json
import os
import signal

import pytest

from harness import Broker

DEFAULT_TIMEOUT_S = 60


def pytest_configure(config):
    config.addinivalue_line("markers", "timeout_s(seconds): per-test time limit (default 60)")


class TestTimeout(Exception):
    pass


@pytest.fixture(autouse=True)
def _time_limit(request):
    marker = request.node.get_closest_marker("timeout_s")
    limit = int(marker.args[0]) if marker else DEFAULT_TIMEOUT_S

    def on_alarm(signum, frame):
        raise TestTimeout(f"test exceeded its time limit of {limit}s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(limit)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _finish(brokers):
    problems = []
    for b in brokers:
        for p in b.stop():
            problems.append(f"[{b.name} in {b.workdir}] {p}\n{b.log_tail(20)}")
    return problems


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    b = Broker(tmp_path_factory.mktemp("broker"), name="module-broker")
    try:
        b.start()
        yield b
    finally:
        problems = _finish([b])
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture
def start_broker(tmp_path):
    started = []

    def start(configs=None, **kw):
        cfg = dict(configs or {})
        cfg.update({k.replace("__", "."): v for k, v in kw.items()})
        b = Broker(tmp_path / f"b{len(started)}", cfg, name=f"broker{len(started)}")
        started.append(b)
        return b.start()

    try:
        yield start
    finally:
        problems = _finish(started)
        for b in started:
            print(b.log_tail(30))
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Write the counts where scripts/test.sh can read them (RUNNEL_PYTEST_COUNTS)."""
    path = os.environ.get("RUNNEL_PYTEST_COUNTS")
    if not path:
        return
    stats = terminalreporter.stats
    count = lambda k: len([r for r in stats.get(k, []) if getattr(r, "when", "call") in ("call", "setup", "teardown")])
    xfail = [f"{r.nodeid}: {getattr(r, 'wasxfail', '')}" for r in stats.get("xfailed", [])]
    with open(path, "w") as f:
        json.dump({
            "passed": count("passed"),
            "failed": count("failed") + count("error"),
            "skipped": count("skipped"),
            "xfailed": len(xfail),
            "xfail_reasons": xfail,
            "xpassed": count("xpassed"),
            "exitstatus": int(exitstatus),
        }, f)
