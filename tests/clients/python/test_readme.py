"""The README's commands, in order, as a reader types them (issue 16), through $RUNNEL_BIN
and kcat, with a temp HOME and a temp working directory: the first command's server, the
kcat quickstart against it, the streaming SQL demo (or, in a broker-only build, what it
says instead), and the local cluster's commands. Each command is checked against what
the README's text around it says it prints. The README's ports (9092, 9644, 19093) are
replaced by free ones, so the test runs beside another broker.

A README command this file does not know fails the test: a changed README changes the
checks too. scripts/readme-check.sh runs this file after building from a clean clone."""

import os
import re
import signal
import subprocess
import time

import pytest

from cluster import consecutive_free_ports
from harness import runnel_bin
from test_first_hour import wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
README_PORT = "127.0.0.1:9092"


def readme_blocks():
    """The README's ```sh blocks, each a list of (command, comment)."""
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    blocks = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        lines = []
        for line in block.splitlines():
            if not line.strip():
                continue
            # A comment starts at " # " (a '#' inside quotes, as in a tweet's text, is data).
            cmd, _, comment = line.partition("  #")
            lines.append((cmd.strip(), comment.strip()))
        blocks.append(lines)
    return blocks


def block_starting(prefix):
    for b in readme_blocks():
        if b and b[0][0].startswith(prefix):
            return b
    raise AssertionError(f"README.md has no sh block starting with {prefix!r}")


def env_for(tmp_path, **extra):
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNEL_")}
    env.update(HOME=str(home), PATH=os.path.dirname(runnel_bin()) + os.pathsep + env["PATH"])
    env.update(extra)
    return env


def runnel_argv(cmd):
    """A README `runnel ...` command as argv for $RUNNEL_BIN."""
    words = cmd.split()
    assert words[0] == "runnel", cmd
    return [runnel_bin(), *words[1:]]


def shell(cmd, tmp_path, env, timeout=30):
    """A README command that is not `runnel` (kcat, printf), through the shell, in tmp_path."""
    r = subprocess.run(["bash", "-c", cmd], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=timeout)
    assert r.returncode == 0, f"{cmd!r} exited {r.returncode}:\n{r.stdout}\n{r.stderr}"
    return r


def has_sql():
    r = subprocess.run([runnel_bin(), "--help"], capture_output=True, text=True, timeout=10)
    return "\n  sql " in r.stdout


def read_until(path, pattern, proc, timeout):
    deadline = time.monotonic() + timeout
    while True:
        text = path.read_text(errors="replace") if path.exists() else ""
        if re.search(pattern, text, re.M):
            return text
        assert proc.poll() is None, f"exited {proc.returncode} before printing {pattern!r}:\n{text[-3000:]}"
        assert time.monotonic() < deadline, f"no {pattern!r} within {timeout} s:\n{text[-3000:]}"
        time.sleep(0.3)


def stop(proc, sig=signal.SIGTERM, timeout=30):
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"did not stop within {timeout} s of {sig!r}")


@pytest.mark.timeout_s(150)
def test_readme_server_kcat_and_streaming_sql(tmp_path):
    (server_cmd, server_says), (tests_cmd, _) = block_starting("cargo run")[:2]
    # 1. The first command, without cargo: the binary it builds, with its arguments.
    assert server_cmd.startswith("cargo run --release -p runnel --no-default-features -- "), server_cmd
    assert "127.0.0.1:9092" in server_says and "./runnel-data" in server_says, server_says
    assert tests_cmd == "./scripts/test.sh" and os.access(os.path.join(ROOT, "scripts/test.sh"), os.X_OK)
    port = consecutive_free_ports(2)
    bootstrap = f"127.0.0.1:{port}"
    env = env_for(tmp_path)
    args = server_cmd.split(" -- ", 1)[1].split()
    out = tmp_path / "server.out"
    with open(out, "w") as f:
        server = subprocess.Popen(
            [runnel_bin(), *args, "--set", f"listeners=PLAINTEXT://{bootstrap}",
             "--set", f"http.listeners=127.0.0.1:{port + 1}"],
            cwd=tmp_path, env=env, stdout=f, stderr=subprocess.DEVNULL)
    try:
        first = read_until(out, r"^listening on ", server, 30).splitlines()[0]
        assert first == f"listening on {bootstrap}", first
        assert (tmp_path / "runnel-data").is_dir(), "the README says data in ./runnel-data"

        # 2. kcat, as the README types it, with its port replaced.
        kcat_block = block_starting("printf ")
        consumed = None
        for cmd, says in kcat_block:
            cmd = cmd.replace(README_PORT, bootstrap)
            assert cmd.split()[0] in ("printf", "kcat"), f"a README command this test does not know: {cmd}"
            r = shell(cmd, tmp_path, env)
            if " -C " in cmd:
                consumed = r.stdout
                assert "prints the two lines back" in says, says
        assert consumed is not None, "the kcat block reads the topic back"
        written = (tmp_path / "tweets.jsonl").read_text()
        assert consumed == written and len(written.splitlines()) == 2, (consumed, written)

        # 3. The streaming SQL demo.
        check_streaming_sql(tmp_path, env, bootstrap)
    finally:
        rc = stop(server)
    assert rc == 0, "SIGTERM stops the server cleanly (exit 0)"


def check_streaming_sql(tmp_path, env, bootstrap):
    (demo_cmd, _), (sql_cmd, _) = block_starting("runnel demo tweets")
    demo_argv = runnel_argv(demo_cmd.replace(README_PORT, bootstrap))
    assert "--rate" in demo_argv and "2000" in demo_argv, demo_cmd
    # The query file's bootstrap default is the README's port: -b replaces it, and the
    # checkpoint goes to the test's directory.
    sql_argv = runnel_argv(sql_cmd) + ["-b", bootstrap, "-d", f"checkpoint={tmp_path / 'ck'}"]
    if not has_sql():
        for argv in (demo_argv, sql_argv):
            r = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=10)
            assert r.returncode == 2 and "not in this build" in r.stderr, r.stderr
        return
    demo_err = tmp_path / "demo.err"
    sql_out, sql_err = tmp_path / "sql.out", tmp_path / "sql.err"
    with open(demo_err, "w") as de, open(sql_out, "w") as so, open(sql_err, "w") as se:
        demo = subprocess.Popen(demo_argv, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=de)
        sql = subprocess.Popen(sql_argv, cwd=ROOT, env=env, stdout=so, stderr=se)
    try:
        # The README: the generator says what it sent every 5 s; trending.sql prints its
        # counts (the JSON value starts with them) every 5 s, and a line per batch.
        read_until(demo_err, r"^runnel demo tweets: \d+ sent to tweets \(\d+/s\)$", demo, 30)
        read_until(sql_out, r'^\|\s*\S+\|\{"tweets":\d+', sql, 60)
        text = read_until(sql_err, r"^batch \d+: \d+ rows in \(\d+ rows/s\), \d+ ms, \d+ rows out, "
                                   r"watermark \S+, state \d+ rows$", sql, 30)
        assert "panicked" not in text, text
    finally:
        assert stop(sql, signal.SIGINT) == 0, sql_err.read_text()[-2000:]
        assert stop(demo, signal.SIGINT) == 0, demo_err.read_text()[-2000:]
    assert re.search(r"^runnel demo tweets: sent \d+ tweets to tweets in ", demo_err.read_text(), re.M), \
        demo_err.read_text()[-2000:]


@pytest.mark.timeout_s(150)
def test_readme_local_cluster_commands(tmp_path):
    block = block_starting("runnel cluster local")
    # Kafka on base..base+2, the quorum on base+3..base+5, HTTP on base+6..base+8, where
    # the README has 9092, 19093 and 9644.
    base = consecutive_free_ports(9)
    kafka = [f"127.0.0.1:{base + i}" for i in range(3)]
    http = [f"127.0.0.1:{base + 6 + i}" for i in range(3)]
    env = env_for(tmp_path, RUNNEL_BROKERS=kafka[0])  # for `cluster info`, whose default is 9092
    ports = ["--base-port", str(base), "--controller-base-port", str(base + 3),
             "--http-base-port", str(base + 6)]
    launcher = None
    launcher_err = tmp_path / "launcher.err"
    seen = []

    def run(cmd, expect=0, timeout=70, stderr=False):
        r = subprocess.run(runnel_argv(cmd), cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=timeout)
        assert r.returncode == expect, f"{cmd} exited {r.returncode}:\n{r.stdout}\n{r.stderr}"
        return r.stderr if stderr else r.stdout

    def status_rows():
        rows = {}
        for line in run("runnel cluster local status").splitlines()[1:]:
            f = line.split()
            rows[int(f[0])] = f
        return rows

    try:
        for cmd, says in block:
            seen.append(cmd)
            if cmd == "runnel cluster local --nodes 3":
                assert "127.0.0.1:9092-9094" in says and "9644-9646" in says and "./runnel-cluster" in says, says
                with open(launcher_err, "w") as err:
                    launcher = subprocess.Popen(runnel_argv(cmd) + ports, cwd=tmp_path, env=env,
                                                stdout=subprocess.PIPE, stderr=err, text=True)
                line = launcher.stdout.readline()
                assert line.strip() == "cluster up: bootstrap.servers=" + ",".join(kafka), \
                    line + launcher_err.read_text()
                assert (tmp_path / "runnel-cluster" / "cluster.json").is_file()
            elif cmd == "runnel cluster local status":
                rows = status_rows()
                assert sorted(rows) == [1, 2, 3], rows
                for n, f in rows.items():
                    # NODE PID STATE KAFKA QUORUM HTTP DATA-DIR (LOG)
                    assert f[1].isdigit() and f[2] == "running", f
                    assert f[3] == kafka[n - 1] and f[5] == http[n - 1], f
                    assert f[6] == f"./runnel-cluster/node-{n}" and f[7] == f"(./runnel-cluster/node-{n}.log)", f
                    assert os.path.isdir(tmp_path / "runnel-cluster" / f"node-{n}")
            elif cmd == "runnel cluster info":
                assert "cluster id" in says and "controller marked" in says, says
                def info():
                    out = run(cmd)
                    assert out.startswith("CLUSTER\n=======\n") and "TOPICS" in out, out
                    brokers = out.split("BROKERS", 1)[1].split("TOPICS", 1)[0]
                    ids = re.findall(r"^(\d)(\*?)\s+127\.0\.0\.1\s+(\d+)\s", brokers, re.M)
                    # Every node registers within moments of the launcher's "cluster up".
                    return (out, brokers, ids) if len(ids) == 3 else None
                out, brokers, ids = wait_for("three brokers in `runnel cluster info`", info, 15)
                assert [(i, int(p)) for i, _, p in ids] == [(str(n), base + n - 1) for n in (1, 2, 3)], out
                assert [i for i, star, _ in ids if star] and "(* the controller)" in brokers, out
            elif cmd == "runnel cluster local kill --node 2":
                run(cmd)
                assert [status_rows()[n][2] for n in (1, 2, 3)] == ["running", "stopped", "running"]
                # The launcher reports the death once.
                def exits():
                    return [line for line in launcher_err.read_text().splitlines() if "exited" in line]
                wait_for("the launcher's report", exits)
                time.sleep(1.5)
                reports = exits()
                assert len(reports) == 1 and reports[0].startswith("node 2 ") and "restart --node 2" in reports[0], reports
            elif cmd == "runnel cluster local stop":
                assert "stopped 3 node(s) in ./runnel-cluster" in run(cmd, stderr=True)
                assert launcher.wait(15) == 0, "the launcher ends when its nodes are stopped"
                assert all(f[2] == "stopped" for f in status_rows().values())
            else:
                raise AssertionError(f"a README command this test does not know: {cmd}")
        assert seen[0] == "runnel cluster local --nodes 3" and len(seen) == 5, seen
    finally:
        if launcher is not None and launcher.poll() is None:
            subprocess.run(runnel_argv("runnel cluster local stop"), cwd=tmp_path, env=env, timeout=70)
            launcher.kill()
            launcher.wait()
