"""The first hour with Runnel (issue 16), through the real binary ($RUNNEL_BIN): the CLI
takes the spellings Kafka's tools and kcat users bring (--topic, -o beginning|-N|s@TS,
--group, --command-config, -X, RUNNEL_BROKERS, -b), lists as JSON, suggests the closest
flag, fails fast naming the address, prints no colour codes into pipes or files and no
panic on a closed stdout; `runnel cluster local` starts, reports, kills, restarts and stops
nodes with their HTTP APIs; the README's first command starts a broker."""

import json
import os
import re
import socket
import subprocess
import time
import urllib.request

import pytest
from confluent_kafka import Producer

import ck
from cluster import consecutive_free_ports
from harness import runnel_bin, unique

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
ANSI = re.compile(r"\x1b\[")


def run(*args, expect=0, timeout=30, env=None, **kw):
    r = subprocess.run([runnel_bin(), *args], capture_output=True, text=True, timeout=timeout,
                       env={**os.environ, **(env or {})}, **kw)
    assert r.returncode == expect, \
        f"runnel {' '.join(args)} exited {r.returncode}, expected {expect}:\n{r.stdout}\n{r.stderr}"
    return r


def json_lines(out):
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def produce_values(broker, topic, values, timestamps=None):
    p = ck.producer(broker)
    records = [{"value": v.encode()} for v in values]
    if timestamps:
        for r, ts in zip(records, timestamps):
            r["timestamp"] = ts
    assert ck.produce_all(p, topic, records, partition=0).failed == []


# ------------------------------------------------------------------ topics

def test_topics_take_kafka_topics_spellings(broker):
    topic = unique("dialect")
    b = broker.bootstrap
    r = run("topics", "create", "--topic", topic, "--partitions", "2", "--replication-factor", "1", "-b", b)
    assert f"Created topic {topic}" in r.stdout
    assert f"connecting to {b} (from --bootstrap-server)" in r.stderr, r.stderr
    d = json.loads(run("topics", "describe", "--topic", topic, "--json", "-b", b).stdout)
    assert len(d["partitions"]) == 2
    listed = {t["topic"]: t for t in json_lines(run("topics", "list", "--json", "-b", b).stdout)}
    assert listed[topic] == {"topic": topic, "partitions": 2, "replication_factor": 1, "internal": False}
    run("topics", "delete", "--topic", topic, "-b", b)
    r = run("topics", "delete", topic, "-b", b, expect=1)
    assert "does not exist" in r.stderr and "runnel topics list" in r.stderr, r.stderr
    assert "create it" not in r.stderr, r.stderr
    # Both spellings at once is a usage error, not a silent pick.
    run("topics", "create", "a", "--topic", "b", "-b", b, expect=2)


# ------------------------------------------------------------------ consume -o

def test_consume_takes_kcat_offsets(broker):
    topic = ck.create_topic(broker, unique("offsets"))
    base = int(time.time() * 1000) - 100_000
    produce_values(broker, topic, [f"v{i}" for i in range(10)], [base + i * 1000 for i in range(10)])

    def consume(*args, expect=0):
        return run("consume", "-t", topic, "-e", "-q", *args, "-b", broker.bootstrap, expect=expect)

    assert consume("-o", "beginning").stdout.split() == [f"v{i}" for i in range(10)]
    assert consume("-o", "-3").stdout.split() == ["v7", "v8", "v9"]
    assert consume("-o", "5").stdout.split() == [f"v{i}" for i in range(5, 10)]
    assert consume("-o", f"s@{base + 7000}").stdout.split() == ["v7", "v8", "v9"]
    assert consume("-o", "end").stdout.split() == []
    r = consume("-o", "stored", expect=2)
    assert "--group" in r.stderr, r.stderr
    r = consume("-o", "begining", expect=2)
    assert "beginning" in r.stderr and "begining" in r.stderr, r.stderr


# ------------------------------------------------------------------ consume --group

@pytest.mark.timeout_s(90)
def test_consume_group_is_a_real_member_that_commits(start_broker):
    broker = start_broker(group__initial__rebalance__delay__ms=0)
    topic = ck.create_topic(broker, unique("grp"))
    group = unique("g")
    produce_values(broker, topic, [f"a{i}" for i in range(10)])
    b = broker.bootstrap
    r = run("consume", "--topic", topic, "--group", group, "-o", "beginning", "-n", "10", "-b", b)
    assert r.stdout.split() == [f"a{i}" for i in range(10)], r.stderr
    assert f"group {group}" in r.stderr
    d = json.loads(run("groups", "describe", group, "--json", "-b", b).stdout)
    assert [(p["partition"], p["committed_offset"]) for p in d["partitions"]] == [(0, 10)], d
    # The next member starts where the group left off (-o only applies without a commit).
    produce_values(broker, topic, ["b0", "b1", "b2"])
    r = run("consume", "-t", topic, "-X", f"group.id={group}", "-o", "beginning", "-n", "3", "-b", b)
    assert r.stdout.split() == ["b0", "b1", "b2"], r.stderr
    # While it runs, the member shows in `groups describe` with its assignment.
    proc = subprocess.Popen([runnel_bin(), "consume", "-t", topic, "-G", group, "--timeout-ms", "20000",
                             "-X", "client.id=first-hour", "-b", b],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while True:
            d = json.loads(run("groups", "describe", group, "--json", "-b", b).stdout)
            if d["members"] and d["members"][0]["assignment"]:
                break
            assert time.monotonic() < deadline, d
            time.sleep(0.3)
        assert d["members"][0]["client_id"] == "first-hour", d
        assert d["members"][0]["assignment"] == [{"topic": topic, "partitions": [0]}], d
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "panicked" not in err


@pytest.mark.timeout_s(60)
def test_two_group_members_split_the_partitions(broker):
    topic = ck.create_topic(broker, unique("split"), partitions=2)
    group = unique("g")
    p = ck.producer(broker)
    values = {part: [f"p{part}-{i}" for i in range(20)] for part in (0, 1)}
    for part, vs in values.items():
        assert ck.produce_all(p, topic, [{"value": v.encode()} for v in vs], partition=part).failed == []
    procs = [subprocess.Popen([runnel_bin(), "consume", "-t", topic, "-G", group, "-o", "beginning",
                               "--timeout-ms", "40000", "-b", broker.bootstrap],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        def split():
            try:
                d = json.loads(run("groups", "describe", group, "--json", "-b", broker.bootstrap).stdout)
            except AssertionError:
                # GROUP_ID_NOT_FOUND until the first member has joined.
                return False
            owned = sorted(tuple(a["partitions"]) for m in d["members"] for a in m["assignment"])
            return owned == [(0,), (1,)]
        wait_for("each member to own one partition", split, timeout=30)
    finally:
        outs = []
        for proc in procs:
            proc.terminate()
            out, err = proc.communicate(timeout=20)
            assert proc.returncode == 0 and "panicked" not in err, err
            outs += out.split()
    assert set(outs) == set(values[0] + values[1])


# ------------------------------------------------------------------ where the cluster is

def test_bootstrap_from_env_properties_file_and_x(broker, tmp_path):
    topic = ck.create_topic(broker, unique("conn"))
    b = broker.bootstrap
    r = run("topics", "list", env={"RUNNEL_BROKERS": b})
    assert topic in r.stdout.split() and "from RUNNEL_BROKERS" in r.stderr, r.stderr
    props = tmp_path / "client.properties"
    props.write_text(f"# as kafka-topics --command-config takes it\nbootstrap.servers={b}\n"
                     "security.protocol=PLAINTEXT\nclient.id=props\nkey.serializer=x\n")
    r = run("topics", "list", "--command-config", str(props), env={"RUNNEL_BROKERS": "127.0.0.1:1"})
    assert topic in r.stdout.split(), r.stderr
    assert "client.properties" in r.stderr and "ignoring client property key.serializer" in r.stderr, r.stderr
    r = run("topics", "list", "-X", f"bootstrap.servers={b}")
    assert topic in r.stdout.split()
    # -b wins over everything else.
    run("topics", "list", "-b", b, "-X", "bootstrap.servers=127.0.0.1:1")
    # Security settings that cannot be honoured stop the tool, naming the key.
    for bad, needle in ((["-X", "security.protocol=SASL_SSL"], "ssl.truststore.location"),
                        (["-X", "security.protocol=SASL_PLAINTEXT", "-X", "sasl.mechanisms=GSSAPI"],
                         "sasl.mechanism")):
        r = run("topics", "list", "-b", b, *bad, expect=2)
        assert needle in r.stderr, r.stderr
    props.write_text(f"bootstrap.servers={b}\nsecurity.protocol=SSL\nssl.truststore.location=/x.pem\n")
    r = run("topics", "list", "--command-config", str(props), expect=2)
    assert "ssl.truststore.location" in r.stderr and "/x.pem" in r.stderr, r.stderr


def test_cluster_info_names_brokers_controller_and_topics(broker):
    topic = ck.create_topic(broker, unique("info"))
    info = json.loads(run("cluster", "info", "--json", "-b", broker.bootstrap).stdout)
    assert info["cluster_id"]
    assert [(x["node_id"], x["port"], x["controller"]) for x in info["brokers"]] == \
        [(1, broker.port, info["controller_id"] == 1)]
    assert {"topic": topic, "internal": False, "partitions": 1, "replication_factor": 1} in info["topics"]
    text = run("cluster", "info", "-b", broker.bootstrap).stdout
    assert "BROKERS" in text and topic in text


# ------------------------------------------------------------------ failing well

def test_a_misspelled_flag_or_command_names_the_closest_one(broker):
    r = run("topics", "list", "--bootstrap-sever", broker.bootstrap, expect=2)
    assert "--bootstrap-server" in r.stderr, r.stderr
    r = run("topcis", "list", expect=2)
    assert "topics" in r.stderr, r.stderr


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_nothing_listening_fails_fast_naming_the_address():
    addr = f"127.0.0.1:{free_port()}"
    start = time.monotonic()
    r = run("topics", "list", "-b", addr, expect=1)
    assert time.monotonic() - start < 5
    assert addr in r.stderr and "hint:" in r.stderr, r.stderr


def test_a_silent_listener_fails_within_the_timeout():
    # Accepts TCP (the kernel's backlog) but never answers ApiVersions: a hung broker.
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    addr = f"127.0.0.1:{s.getsockname()[1]}"
    try:
        start = time.monotonic()
        r = run("consume", "-t", "x", "-b", addr, "--timeout", "1.5", expect=1)
        took = time.monotonic() - start
        assert 1.4 < took < 6, took
        assert addr in r.stderr and "--timeout" in r.stderr, r.stderr
    finally:
        s.close()


def test_no_colour_codes_in_files_or_pipes(broker):
    r = run("topics", "describe", "--topic", unique("missing"), "-b", broker.bootstrap, expect=1)
    assert not ANSI.search(r.stderr), r.stderr
    with open(broker.log_path, errors="replace") as f:
        log = f.read()
    assert "broker started" in log and not ANSI.search(log), log[:500]


def test_a_closed_stdout_ends_the_tool_quietly(broker):
    topic = ck.create_topic(broker, unique("pipe"))
    produce_values(broker, topic, [f"x{i}" * 100 for i in range(2000)])
    for args in (["consume", "-t", topic, "-o", "beginning", "-e"], ["topics", "list"], ["man"]):
        proc = subprocess.Popen([runnel_bin(), *args, "-b", broker.bootstrap] if args[0] != "man"
                                else [runnel_bin(), *args],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        proc.stdout.readline()
        proc.stdout.close()
        err = proc.stderr.read().decode(errors="replace")
        assert proc.wait(20) == 0, err
        assert "panicked" not in err, err


def test_a_broker_outlives_the_reader_of_its_stdout_and_stderr(tmp_path):
    # A launcher that read the start-up line and went away: every later line the broker
    # writes (the HTTP line, its logs) meets a closed pipe and must not stop it.
    proc = subprocess.Popen([runnel_bin(), "server", "--set", "listeners=PLAINTEXT://127.0.0.1:0",
                             "--set", f"log.dirs={tmp_path}", "--set", "http.listeners=127.0.0.1:0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        proc.stderr.close()
        addr = proc.stdout.readline().split()[-1]
        proc.stdout.close()
        for i in range(3):
            run("topics", "create", f"closed-{i}", "-b", addr)
        assert proc.poll() is None
    finally:
        proc.terminate()
        assert proc.wait(30) == 0


def test_completions_and_man_page_come_from_the_cli_definition():
    bash = run("completions", "bash").stdout
    assert "_runnel()" in bash and "--bootstrap-server" in bash
    assert "compdef" in run("completions", "zsh").stdout
    man = run("man").stdout
    assert man.startswith(".ie") or ".TH runnel" in man, man[:200]
    run("completions", "tcsh", expect=2)


def test_bench_lists_its_own_settings_and_deletes_the_topic_it_made(broker):
    b = broker.bootstrap
    topic = unique("bench")
    r = run("bench", "consume", "--topic", topic, "--count", "200", "--record-size", "64", "--json", "-b", b)
    doc = json.loads(r.stdout)
    assert doc["bench"] == "consume" and doc["records"] == 200, doc
    assert "fetch_partition_max_bytes" in doc and "acks" not in doc and "producers" not in doc, doc
    assert f"deleted topic {topic}" in r.stderr, r.stderr
    assert topic not in run("topics", "list", "-b", b).stdout.split()
    text = run("bench", "produce", "--topic", topic, "--count", "200", "--record-size", "64",
               "--keep-topic", "-b", b).stdout
    assert "acks=1" in text and "fetch" not in text, text
    assert topic in run("topics", "list", "-b", b).stdout.split()
    # A topic that was there before the run is never deleted.
    run("bench", "produce", "--topic", topic, "--count", "10", "--record-size", "64", "-b", b)
    assert topic in run("topics", "list", "-b", b).stdout.split()


def test_bench_produce_at_a_rate_keeps_to_it_and_reports_the_round_trip(broker):
    """`bench produce --rate` sends on a schedule, so its latency is the round trip at that
    load (the issue's "p99 at 80 % load"), not at saturation."""
    t0 = time.monotonic()
    r = run("bench", "produce", "--topic", unique("bench-rate"), "--count", "1000", "--rate", "500",
            "--record-size", "64", "--json", "-b", broker.bootstrap)
    took = time.monotonic() - t0
    doc = json.loads(r.stdout)
    assert doc["records"] == 1000 and doc["target_rate_records_per_s"] == 500, doc
    # 1,000 records at 500/s take about 2 s; unlimited they would take a fraction of that.
    assert doc["elapsed_s"] >= 1.9 and took >= 1.9, (doc, took)
    assert doc["records_per_s"] <= 520, doc
    assert 0 < doc["latency_ms"]["p50"] <= doc["latency_ms"]["p99"], doc
    run("bench", "produce", "--rate", "0", "-b", broker.bootstrap, expect=2)


def test_a_broker_only_build_says_how_to_get_sql():
    if "\n  sql " in run("--help").stdout:
        pytest.skip("this binary was built with the sql feature")
    for args in (["sql", "-f", "q.sql"], ["demo", "tweets", "--bootstrap-server", "x:1"]):
        r = run(*args, expect=2)
        assert "not in this build" in r.stderr and "cargo install --path crates/cli" in r.stderr, r.stderr


# ------------------------------------------------------------------ cluster local

def wait_for(what, cond, timeout=20):
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@pytest.mark.timeout_s(75)
def test_cluster_local_status_kill_restart_stop(tmp_path):
    base = consecutive_free_ports(6)
    d = str(tmp_path / "cluster")
    err_path = tmp_path / "launcher.err"
    with open(err_path, "w") as err:
        launcher = subprocess.Popen(
            [runnel_bin(), "cluster", "local", "--nodes", "3", "--dir", d, "--base-port", str(base),
             "--controller-base-port", str(base + 3), "--http-base-port", "0",
             "--set", "broker.session.timeout.ms=3000", "--set", "broker.heartbeat.interval.ms=500"],
            stdout=subprocess.PIPE, stderr=err, text=True)
    try:
        line = launcher.stdout.readline()
        assert line.startswith("cluster up: bootstrap.servers="), line + err_path.read_text()
        # The launcher no longer reads its nodes' output: they must go on regardless.
        launcher.stdout.close()

        def status():
            return json.loads(run("cluster", "local", "status", "--json", "--dir", d).stdout)
        st = status()
        assert st["launcher_pid"] == launcher.pid
        assert [n["running"] for n in st["nodes"]] == [True, True, True]
        https = [n["http"] for n in st["nodes"]]
        assert len(set(https)) == 3 and all(h.startswith("127.0.0.1:") for h in https), st
        for h in https:
            with urllib.request.urlopen(f"http://{h}/v1/health", timeout=5) as resp:
                assert resp.status == 200
        assert all(os.path.isdir(n["data_dir"]) for n in st["nodes"])
        table = run("cluster", "local", "status", "--dir", d).stdout
        assert table.count("running") == 3, table

        old_pid = st["nodes"][1]["pid"]
        run("cluster", "local", "kill", "--node", "2", "--dir", d)
        assert [n["running"] for n in status()["nodes"]] == [True, False, True]
        wait_for("the launcher's report", lambda: "node 2" in err_path.read_text())
        time.sleep(1.5)
        reports = [l for l in err_path.read_text().splitlines() if "node 2" in l and "exited" in l]
        assert len(reports) == 1, reports
        bootstrap = st["bootstrap_servers"]
        info = json.loads(run("cluster", "info", "--json", "-b", bootstrap).stdout)
        assert {x["node_id"] for x in info["brokers"]} <= {1, 2, 3}

        run("cluster", "local", "restart", "--node", "2", "--dir", d, timeout=70)
        st = status()
        assert st["nodes"][1]["running"] and st["nodes"][1]["pid"] != old_pid, st
        wait_for("the launcher's 'runs again'", lambda: "node 2 runs again" in err_path.read_text())

        run("cluster", "local", "stop", "--dir", d, timeout=70)
        assert launcher.wait(10) == 0
        assert [n["running"] for n in status()["nodes"]] == [False, False, False]
        log = err_path.read_text()
        assert "panicked" not in log, log
        for n in st["nodes"]:
            with open(n["log"], errors="replace") as f:
                text = f.read()
            assert "panicked" not in text and not ANSI.search(text), text[-2000:]
    finally:
        if launcher.poll() is None:
            subprocess.run([runnel_bin(), "cluster", "local", "stop", "--dir", d], timeout=70)
            launcher.kill()
            launcher.wait()


@pytest.mark.timeout_s(60)
def test_cluster_local_detach_leaves_nodes_for_stop(tmp_path):
    base = consecutive_free_ports(2)
    d = str(tmp_path / "one")
    r = run("cluster", "local", "--nodes", "1", "--dir", d, "--base-port", str(base),
            "--controller-base-port", str(base + 1), "--http-base-port", "0", "--detach", timeout=50)
    assert r.stdout.startswith(f"cluster up: bootstrap.servers=127.0.0.1:{base}"), r.stdout + r.stderr
    try:
        st = json.loads(run("cluster", "local", "status", "--json", "--dir", d).stdout)
        assert st["launcher_pid"] is None and st["nodes"][0]["running"], st
        topic = unique("detached")
        run("topics", "create", topic, "-b", st["bootstrap_servers"])
        # A second start on a running cluster is refused, naming how to stop it.
        r = run("cluster", "local", "--nodes", "1", "--dir", d, "--base-port", str(base), expect=1)
        assert "is running" in r.stderr and "cluster local stop" in r.stderr, r.stderr
    finally:
        run("cluster", "local", "stop", "--dir", d, timeout=40)
    st = json.loads(run("cluster", "local", "status", "--json", "--dir", d).stdout)
    assert not st["nodes"][0]["running"]
    r = run("cluster", "local", "status", "--dir", str(tmp_path / "none"), expect=1)
    assert "cluster local --dir" in r.stderr, r.stderr


# ------------------------------------------------------------------ the README

def readme_first_commands():
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    block = re.search(r"```sh\n(.*?)```", text, re.S).group(1)
    return [line.split("#")[0].strip() for line in block.splitlines() if line.strip()][:2]


def test_readme_first_command_builds_the_broker_alone_and_starts_it(tmp_path):
    server, tests = readme_first_commands()
    # Broker-first: the first build a newcomer waits for leaves the SQL engine out.
    assert server.startswith("cargo run --release -p runnel --no-default-features -- "), server
    assert tests == "./scripts/test.sh" and os.access(os.path.join(ROOT, "scripts/test.sh"), os.X_OK)
    args = server.split(" -- ", 1)[1].split()
    proc = subprocess.Popen([runnel_bin(), *args, "--set", "listeners=PLAINTEXT://127.0.0.1:0",
                             "--set", f"log.dirs={tmp_path}", "--set", "http.listeners=127.0.0.1:0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=tmp_path)
    try:
        assert proc.stdout.readline().startswith("listening on 127.0.0.1:")
    finally:
        proc.terminate()
        assert proc.wait(30) == 0
