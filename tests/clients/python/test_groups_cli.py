"""`runnel groups list|describe|delete|reset-offsets` against a broker with real
confluent-kafka group members ($RUNNEL_BIN is the binary under test)."""

import json
import subprocess
import time

import pytest
from confluent_kafka import ConsumerGroupTopicPartitions

import ck
from harness import runnel_bin, unique

FAST = {"group.initial.rebalance.delay.ms": 0}


def runnel(broker, *args, check=True, timeout=30):
    r = subprocess.run([runnel_bin(), "groups", *args, "-b", broker.bootstrap],
                       capture_output=True, text=True, timeout=timeout)
    if check:
        assert r.returncode == 0, f"runnel groups {' '.join(args)} exited {r.returncode}:\n{r.stdout}\n{r.stderr}"
    return r


def json_lines(out):
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def member(broker, topic, group, partitions, **conf):
    """A subscribed consumer that has its assignment (kept alive by the caller)."""
    c = ck.consumer(broker, **{"group.id": group, "enable.partition.eof": False, "client.id": "cli-test", **conf})
    c.subscribe([topic])
    deadline = time.monotonic() + 20
    while len(c.assignment()) < partitions:
        assert time.monotonic() < deadline, f"no assignment within 20s: {c.assignment()}"
        c.poll(0.1)
    return c


def committed(broker, group):
    a = ck.admin(broker)
    res = a.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)], request_timeout=10)[group].result(10)
    return {(tp.topic, tp.partition): tp.offset for tp in res.topic_partitions}


def commit(broker, group, offsets):
    from confluent_kafka import TopicPartition
    a = ck.admin(broker)
    tps = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
    res = a.alter_consumer_group_offsets([ConsumerGroupTopicPartitions(group, tps)], request_timeout=10)[group].result(10)
    assert all(tp.error is None for tp in res.topic_partitions), res.topic_partitions


def produce(broker, topic, partitions, per_partition, timestamp=None):
    p = ck.producer(broker)
    for part in range(partitions):
        recs = [{"key": b"k", "value": f"v{i}".encode(), **({"timestamp": timestamp + i} if timestamp else {})}
                for i in range(per_partition)]
        assert ck.produce_all(p, topic, recs, partition=part).failed == []


@pytest.mark.timeout_s(60)
def test_list_and_describe_classic_group(start_broker):
    b = start_broker(FAST)
    topic = ck.create_topic(b, unique("cli"), partitions=3)
    group, idle = unique("g"), unique("idle")
    produce(b, topic, 3, 10)
    c = member(b, topic, group, 3)
    try:
        commit(b, idle, {(topic, 0): 4})
        c.commit(offsets=[__import__("confluent_kafka").TopicPartition(topic, 0, 7),
                          __import__("confluent_kafka").TopicPartition(topic, 1, 10)], asynchronous=False)
        names = runnel(b, "list").stdout.split()
        assert group in names and idle in names
        assert not any(n.startswith("__") for n in names)
        verbose = runnel(b, "list", "--state", "stable").stdout
        assert group in verbose and idle not in verbose
        listed = {g["group"]: g for g in json_lines(runnel(b, "list", "--json").stdout)}
        assert listed[group]["state"] == "Stable" and listed[idle]["state"] == "Empty"

        (d,) = json_lines(runnel(b, "describe", group, "--json").stdout)
        assert d["state"] == "Stable" and d["type"] == "classic" and d["assignor"] == "range"
        (m,) = d["members"]
        assert m["client_id"] == "cli-test" and m["host"] and m["member_id"]
        assert m["assignment"] == [{"topic": topic, "partitions": [0, 1, 2]}]
        parts = {p["partition"]: p for p in d["partitions"]}
        assert sorted(parts) == [0, 1, 2]
        assert (parts[0]["committed_offset"], parts[0]["log_end_offset"], parts[0]["lag"]) == (7, 10, 3)
        assert (parts[1]["committed_offset"], parts[1]["lag"]) == (10, 0)
        assert parts[2]["committed_offset"] is None and parts[2]["lag"] is None
        assert all(p["member_id"] == m["member_id"] and p["client_id"] == "cli-test" for p in parts.values())

        text = runnel(b, "describe", group).stdout
        for h in ("CURRENT-OFFSET", "LOG-END-OFFSET", "LAG", "CONSUMER-ID", "HOST", "CLIENT-ID", "ASSIGNMENT"):
            assert h in text, text
        assert f"{topic}:0,1,2" in text
        line0 = next(l for l in text.splitlines() if l.startswith(group) and f" {topic} " in f" {l} " and l.split()[2] == "0")
        assert line0.split()[3:6] == ["7", "10", "3"], line0

        (di,) = json_lines(runnel(b, "describe", idle, "--json").stdout)
        assert di["state"] == "Empty" and di["members"] == []
        assert [(p["partition"], p["committed_offset"], p["lag"]) for p in di["partitions"]] == [(0, 4, 6)]
        assert "no active members" in runnel(b, "describe", idle).stdout

        r = runnel(b, "describe", unique("nope"), check=False)
        assert r.returncode == 1 and "GroupIdNotFound" in r.stderr, r.stderr
    finally:
        c.close()


@pytest.mark.timeout_s(60)
def test_describe_consumer_protocol_group(start_broker):
    b = start_broker(FAST, group__consumer__heartbeat__interval__ms=500)
    topic = ck.create_topic(b, unique("cli848"), partitions=4)
    group = unique("g")
    c = member(b, topic, group, 4, **{"group.protocol": "consumer"})
    try:
        (d,) = json_lines(runnel(b, "describe", group, "--json").stdout)
        assert d["type"] == "consumer" and d["state"] == "Stable", d
        assert d["assignor"] in ("uniform", "range")
        (m,) = d["members"]
        assert m["client_id"] == "cli-test" and m["member_epoch"] >= 1
        assert m["assignment"] == [{"topic": topic, "partitions": [0, 1, 2, 3]}]
        assert "Type: consumer" in runnel(b, "describe", group).stdout
    finally:
        c.close()


@pytest.mark.timeout_s(90)
def test_reset_offsets(start_broker):
    b = start_broker(FAST)
    topic = ck.create_topic(b, unique("reset"), partitions=2)
    group = unique("g")
    t0 = int(time.time() * 1000) - 100_000
    produce(b, topic, 2, 20, timestamp=t0)  # timestamps t0 .. t0+19
    c = member(b, topic, group, 2)
    c.commit(offsets=[__import__("confluent_kafka").TopicPartition(topic, p, 10) for p in (0, 1)], asynchronous=False)
    # Refused while the group has members, dry run or not.
    for extra in ([], ["--execute"]):
        r = runnel(b, "reset-offsets", group, "--topic", topic, "--to-earliest", *extra, check=False)
        assert r.returncode == 1 and "inactive" in r.stderr and "Stable" in r.stderr, (r.stdout, r.stderr)
    c.close()
    assert committed(b, group) == {(topic, 0): 10, (topic, 1): 10}

    # Dry run (the default) shows the plan and changes nothing.
    out = runnel(b, "reset-offsets", group, "--topic", topic, "--to-earliest").stdout
    assert "NEW-OFFSET" in out and "dry run" in out
    assert committed(b, group) == {(topic, 0): 10, (topic, 1): 10}
    plan = json_lines(runnel(b, "reset-offsets", group, "--topic", topic, "--to-latest", "--dry-run", "--json").stdout)
    assert [(p["partition"], p["previous_offset"], p["new_offset"]) for p in plan] == [(0, 10, 20), (1, 10, 20)]
    assert committed(b, group) == {(topic, 0): 10, (topic, 1): 10}

    def execute(*args):
        runnel(b, "reset-offsets", group, *args, "--execute")
        return committed(b, group)

    assert execute("--topic", topic, "--to-earliest") == {(topic, 0): 0, (topic, 1): 0}
    assert execute("--topic", topic, "--to-latest") == {(topic, 0): 20, (topic, 1): 20}
    assert execute("--topic", topic, "--to-offset", "5") == {(topic, 0): 5, (topic, 1): 5}
    assert execute("--all-topics", "--shift-by", "3") == {(topic, 0): 8, (topic, 1): 8}
    assert execute("--topic", f"{topic}:1", "--shift-by", "-100") == {(topic, 0): 8, (topic, 1): 0}
    assert execute("--topic", f"{topic}:0", "--to-offset", "1000000") == {(topic, 0): 20, (topic, 1): 0}
    assert execute("--topic", topic, "--to-datetime", str(t0 + 7)) == {(topic, 0): 7, (topic, 1): 7}
    iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime((t0 + 12) // 1000)) + ".%03dZ" % ((t0 + 12) % 1000)
    assert execute("--topic", topic, "--to-datetime", iso) == {(topic, 0): 12, (topic, 1): 12}
    # After every record: the log end.
    assert execute("--topic", topic, "--to-datetime", str(t0 + 10**9)) == {(topic, 0): 20, (topic, 1): 20}

    # A consumer in the group now starts at the reset offsets.
    assert execute("--topic", topic, "--to-offset", "15") == {(topic, 0): 15, (topic, 1): 15}
    c = ck.consumer(b, **{"group.id": group, "enable.partition.eof": False})
    c.subscribe([topic])
    got = []
    deadline = time.monotonic() + 20
    while len(got) < 10 and time.monotonic() < deadline:
        m = c.poll(0.2)
        if m is not None and not m.error():
            got.append((m.partition(), m.offset()))
    c.close()
    assert sorted(got) == [(p, o) for p in (0, 1) for o in range(15, 20)]

    # Usage errors exit 2.
    r = runnel(b, "reset-offsets", group, "--topic", topic, check=False)
    assert r.returncode == 2
    r = runnel(b, "reset-offsets", group, "--topic", f"{topic}:9", "--to-earliest", check=False)
    assert r.returncode == 2 and "no partition 9" in r.stderr
    r = runnel(b, "reset-offsets", group, "--topic", topic, "--to-datetime", "yesterday", check=False)
    assert r.returncode == 2


@pytest.mark.timeout_s(60)
def test_delete_groups(start_broker):
    b = start_broker(FAST)
    topic = ck.create_topic(b, unique("del"), partitions=1)
    group, idle = unique("g"), unique("idle")
    commit(b, idle, {(topic, 0): 0})
    c = member(b, topic, group, 1)
    r = runnel(b, "delete", group, check=False)
    assert r.returncode == 1 and "NonEmptyGroup" in r.stderr and "members" in r.stderr, r.stderr
    c.close()
    out = runnel(b, "delete", group, idle).stdout
    assert f"Deleted group {group}." in out and f"Deleted group {idle}." in out
    names = runnel(b, "list").stdout.split()
    assert group not in names and idle not in names
    assert committed(b, idle) == {}
    r = runnel(b, "delete", group, check=False)
    assert r.returncode == 1 and "no such group" in r.stderr
