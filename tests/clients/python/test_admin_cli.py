"""`runnel configs|topics alter|logdirs|records` end to end against a real broker
($RUNNEL_BIN is the binary under test); results are cross-checked with confluent-kafka."""

import json
import os
import subprocess

import pytest
from confluent_kafka.admin import ConfigResource

import ck
from harness import runnel_bin, unique


def runnel(broker, *args, expect=0, timeout=30):
    r = subprocess.run([runnel_bin(), *args, "-b", broker.bootstrap],
                       capture_output=True, text=True, timeout=timeout)
    assert r.returncode == expect, \
        f"runnel {' '.join(args)} exited {r.returncode}, expected {expect}:\n{r.stdout}\n{r.stderr}"
    return r


def json_lines(out):
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def table(out):
    """KEY VALUE SOURCE rows -> {key: (value, source)}."""
    lines = out.splitlines()
    assert lines[0].split() == ["KEY", "VALUE", "SOURCE"], out
    v, s = lines[0].index("VALUE"), lines[0].index("SOURCE")
    return {line[:v].strip(): (line[v:s].strip(), line[s:].strip()) for line in lines[1:]}


def topic_configs(broker, topic):
    a = ck.admin(broker)
    res = ConfigResource(ConfigResource.Type.TOPIC, topic)
    entries = a.describe_configs([res], request_timeout=10)[res].result(10)
    return {k: (e.value, e.source) for k, e in entries.items()}


def produce(broker, topic, partition, n):
    p = ck.producer(broker)
    assert ck.produce_all(p, topic, [{"key": b"k", "value": b"%d" % i} for i in range(n)], partition=partition).failed == []


# ------------------------------------------------------------------ configs

def test_configs_describe_topic_table_and_json(broker):
    topic = ck.create_topic(broker, unique("cfg"))
    rows = table(runnel(broker, "configs", "describe", "--topic", topic).stdout)
    assert rows["retention.ms"][1] == "DEFAULT_CONFIG", rows
    assert rows["cleanup.policy"] == ("delete", "DEFAULT_CONFIG"), rows
    theirs = topic_configs(broker, topic)
    assert {k: v for k, (v, _) in rows.items()} == {k: v for k, (v, _) in theirs.items()}
    doc = json.loads(runnel(broker, "configs", "describe", "--topic", topic, "--json").stdout)
    assert doc["resource_type"] == "topic" and doc["resource_name"] == topic
    by_name = {c["name"]: c for c in doc["configs"]}
    assert by_name["retention.ms"]["source"] == "DEFAULT_CONFIG"
    assert by_name["retention.ms"]["value"] == theirs["retention.ms"][0]
    keyed = table(runnel(broker, "configs", "describe", "--topic", topic, "--key", "retention.ms").stdout)
    assert list(keyed) == ["retention.ms"]


def test_configs_alter_sets_and_deletes_incrementally(broker):
    topic = ck.create_topic(broker, unique("cfg"))
    r = runnel(broker, "configs", "alter", "--topic", topic,
               "--set", "retention.ms=123456", "--set", "max.message.bytes=2000000")
    assert f"topic {topic}" in r.stdout and "retention.ms=123456" in r.stdout
    ours = table(runnel(broker, "configs", "describe", "--topic", topic).stdout)
    assert ours["retention.ms"] == ("123456", "DYNAMIC_TOPIC_CONFIG")
    assert ours["max.message.bytes"] == ("2000000", "DYNAMIC_TOPIC_CONFIG")
    assert topic_configs(broker, topic)["retention.ms"][0] == "123456"
    overrides = table(runnel(broker, "configs", "describe", "--topic", topic, "--overrides").stdout)
    assert set(overrides) == {"retention.ms", "max.message.bytes"}
    # Incremental: deleting one key keeps the other.
    runnel(broker, "configs", "alter", "--topic", topic, "--delete", "retention.ms")
    ours = table(runnel(broker, "configs", "describe", "--topic", topic).stdout)
    assert ours["retention.ms"][1] == "DEFAULT_CONFIG"
    assert ours["max.message.bytes"] == ("2000000", "DYNAMIC_TOPIC_CONFIG")
    # validate-only changes nothing.
    r = runnel(broker, "configs", "alter", "--topic", topic, "--set", "retention.ms=5", "--validate-only")
    assert "Validated" in r.stdout
    assert table(runnel(broker, "configs", "describe", "--topic", topic).stdout)["retention.ms"][1] == "DEFAULT_CONFIG"


def test_configs_alter_refusals_show_the_brokers_message(broker):
    topic = ck.create_topic(broker, unique("cfg"))
    r = runnel(broker, "configs", "alter", "--topic", topic, "--set", "retention.ms=banana", expect=1)
    assert "InvalidConfig" in r.stderr and "retention.ms" in r.stderr and "banana" in r.stderr, r.stderr
    assert "hint:" in r.stderr
    r = runnel(broker, "configs", "alter", "--topic", topic, "--set", "no.such.key=1", expect=1)
    assert "no.such.key" in r.stderr, r.stderr
    r = runnel(broker, "configs", "alter", "--topic", topic, "--append", "retention.ms=5", expect=1)
    assert "APPEND" in r.stderr, r.stderr
    missing = unique("missing")
    r = runnel(broker, "configs", "alter", "--topic", missing, "--set", "retention.ms=5", expect=1)
    assert missing in r.stderr and "UnknownTopicOrPartition" in r.stderr, r.stderr
    r = runnel(broker, "configs", "describe", "--topic", missing, expect=1)
    assert missing in r.stderr, r.stderr
    # Nothing was changed by the refused requests.
    rows = table(runnel(broker, "configs", "describe", "--topic", topic).stdout)
    assert rows["retention.ms"][1] == "DEFAULT_CONFIG" and "no.such.key" not in rows


def test_configs_usage_errors_exit_2(broker):
    runnel(broker, "configs", "describe", expect=2)
    runnel(broker, "configs", "describe", "--topic", "a", "--broker", expect=2)
    runnel(broker, "configs", "alter", "--topic", "a", expect=2)
    runnel(broker, "configs", "alter", "--topic", "a", "--set", "novalue", expect=2)
    r = runnel(broker, "configs", "alter", "--topic", "a", "--set", "x=1", "--delete", "x", expect=2)
    assert "more than once" in r.stderr


def test_configs_describe_broker(broker):
    rows = table(runnel(broker, "configs", "describe", "--broker").stdout)
    node_id = rows["node.id"][0]
    assert rows["log.dirs"][0] == broker.data_dir, rows["log.dirs"]
    again = table(runnel(broker, "configs", "describe", "--broker", node_id).stdout)
    assert again["log.dirs"] == rows["log.dirs"]
    doc = json.loads(runnel(broker, "configs", "describe", "--broker", node_id, "--json").stdout)
    assert doc["resource_type"] == "broker" and str(doc["resource_name"]) == node_id
    r = runnel(broker, "configs", "describe", "--broker", "4242", expect=1)
    assert "4242" in r.stderr, r.stderr


def test_configs_alter_broker_applies_or_shows_the_brokers_refusal(broker):
    key = "log.retention.ms"
    r = subprocess.run([runnel_bin(), "configs", "alter", "--broker", "--set", f"{key}=123000", "-b", broker.bootstrap],
                       capture_output=True, text=True, timeout=30)
    if r.returncode == 0:
        rows = table(runnel(broker, "configs", "describe", "--broker", "--key", key).stdout)
        assert rows[key] == ("123000", "DYNAMIC_BROKER_CONFIG"), rows
        runnel(broker, "configs", "alter", "--broker", "--delete", key)
        rows = table(runnel(broker, "configs", "describe", "--broker", "--key", key).stdout)
        assert rows[key][1] != "DYNAMIC_BROKER_CONFIG", rows
        # A key that needs a restart: the broker's refusal, verbatim, and exit 1.
        r = runnel(broker, "configs", "alter", "--broker", "--set", "log.dirs=/elsewhere", expect=1)
        assert "alter the configs of broker" in r.stderr and "log.dirs" in r.stderr, r.stderr
        assert "hint: runnel configs describe --broker" in r.stderr, r.stderr
    else:
        assert r.returncode == 1, r
        # The broker's own message, verbatim, naming the broker resource.
        assert "alter the configs of broker" in r.stderr and "(Kafka error code" in r.stderr, r.stderr


# ------------------------------------------------------------------ topics alter

def test_topics_alter_adds_partitions_and_sets_configs(broker):
    topic = ck.create_topic(broker, unique("alter"), partitions=2)
    r = runnel(broker, "topics", "alter", topic, "--partitions", "5", "--set", "cleanup.policy=compact")
    assert "5 partitions (was 2)" in r.stdout and "cleanup.policy=compact" in r.stdout, r.stdout
    ck.wait_for_topic(ck.admin(broker), topic, 5)
    described = json_lines(runnel(broker, "topics", "describe", topic, "--json").stdout)[0]
    assert [p["partition"] for p in described["partitions"]] == [0, 1, 2, 3, 4]
    assert topic_configs(broker, topic)["cleanup.policy"][0] == "compact"
    produce(broker, topic, 4, 3)
    assert ck.watermarks(broker, topic, 4) == (0, 3)
    # Same count: nothing to do. Fewer: the broker refuses, with its message.
    assert "already has 5" in runnel(broker, "topics", "alter", topic, "--partitions", "5").stdout
    r = runnel(broker, "topics", "alter", topic, "--partitions", "3", expect=1)
    assert topic in r.stderr and "InvalidPartitions" in r.stderr, r.stderr
    assert "not remove them" in r.stderr and "(5)" in r.stderr, r.stderr
    r = runnel(broker, "topics", "alter", topic, "--delete", "cleanup.policy")
    assert topic_configs(broker, topic)["cleanup.policy"][0] == "delete"
    r = runnel(broker, "topics", "alter", topic, "--set", "segment.bytes=-4", expect=1)
    assert "segment.bytes" in r.stderr, r.stderr
    runnel(broker, "topics", "alter", topic, expect=2)
    r = runnel(broker, "topics", "alter", unique("missing"), "--partitions", "3", expect=1)
    assert "UnknownTopicOrPartition" in r.stderr, r.stderr


# ------------------------------------------------------------------ records delete

def test_records_delete_before_moves_the_low_watermark(broker):
    topic = ck.create_topic(broker, unique("del"), partitions=2)
    produce(broker, topic, 0, 10)
    produce(broker, topic, 1, 4)
    r = runnel(broker, "records", "delete", "--topic", topic, "--partition", "0", "--before", "6")
    assert r.stdout.strip() == f"Topic: {topic}\tPartition: 0\tLowWatermark: 6", r.stdout
    assert ck.watermarks(broker, topic, 0) == (6, 10)
    got = ck.consume(broker, topic, partition=0, start=0, auto_offset_reset="earliest")
    assert [int(m.value()) for m in got] == [6, 7, 8, 9]
    # All partitions, everything ("end"), as JSON.
    out = json_lines(runnel(broker, "records", "delete", "--topic", topic, "--before", "end", "--json").stdout)
    assert out == [{"topic": topic, "partition": 0, "low_watermark": 10},
                   {"topic": topic, "partition": 1, "low_watermark": 4}]
    assert ck.watermarks(broker, topic, 1) == (4, 4)
    # Past the end: the broker's error, exit 1.
    r = runnel(broker, "records", "delete", "--topic", topic, "--partition", "1", "--before", "99", expect=1)
    assert f"{topic}/1" in r.stderr and "OffsetOutOfRange" in r.stderr, r.stderr
    r = runnel(broker, "records", "delete", "--topic", topic, "--partition", "7", "--before", "1", expect=1)
    assert "no partition 7" in r.stderr, r.stderr
    r = runnel(broker, "records", "delete", "--topic", unique("missing"), "--before", "1", expect=1)
    assert "UnknownTopicOrPartition" in r.stderr, r.stderr
    runnel(broker, "records", "delete", "--topic", topic, "--before", "x", expect=2)
    runnel(broker, "records", "delete", "--topic", topic, expect=2)


# ------------------------------------------------------------------ logdirs

@pytest.mark.timeout_s(90)
def test_logdirs_describe_and_move(start_broker, tmp_path):
    dirs = [str(tmp_path / "disk1"), str(tmp_path / "disk2")]
    b = start_broker(log__dirs=",".join(dirs))
    topic = ck.create_topic(b, unique("dirs"), partitions=4)
    produce(b, topic, 0, 50)
    # A partition's directory is made by its first write (placement is decided at creation).
    for partition in (1, 2, 3):
        produce(b, topic, partition, 1)
    described = json_lines(runnel(b, "logdirs", "describe", "--json").stdout)
    assert sorted(d["log_dir"] for d in described) == sorted(dirs)
    for d in described:
        assert d["total_bytes"] > 0 and 0 <= d["usable_bytes"] <= d["total_bytes"], d
        ours = sorted(p["partition"] for p in d["partitions"] if p["topic"] == topic)
        on_disk = sorted(int(x.rsplit("-", 1)[1]) for x in os.listdir(d["log_dir"]) if x.startswith(topic + "-"))
        assert ours == on_disk and len(ours) == 2, (d, on_disk)
    p0 = next(p for d in described for p in d["partitions"] if p["topic"] == topic and p["partition"] == 0)
    assert p0["size_bytes"] > 0
    source = next(d["log_dir"] for d in described if any(p["topic"] == topic and p["partition"] == 0 for p in d["partitions"]))
    target = next(x for x in dirs if x != source)
    text = runnel(b, "logdirs", "describe", "--topic", topic).stdout
    assert f"LogDir: {source}" in text and f"\t{topic}-0\tSize:" in text and "Usable:" in text, text

    r = runnel(b, "logdirs", "move", "--topic", topic, "--partition", "0", "--dir", target)
    assert f"Moved {topic}/0 to {target}" in r.stdout, r.stdout
    assert os.path.isdir(os.path.join(target, f"{topic}-0"))
    after = json_lines(runnel(b, "logdirs", "describe", "--topic", topic, "--json").stdout)
    where = {d["log_dir"]: sorted(p["partition"] for p in d["partitions"]) for d in after}
    assert 0 in where[target] and 0 not in where[source], where
    produce(b, topic, 0, 10)
    assert len(ck.consume(b, topic, partition=0, start=0)) == 60

    r = runnel(b, "logdirs", "move", "--topic", topic, "--partition", "0", "--dir", str(tmp_path / "nowhere"), expect=1)
    assert "LogDirNotFound" in r.stderr and dirs[0] in r.stderr and dirs[1] in r.stderr, r.stderr
    r = runnel(b, "logdirs", "move", "--topic", topic, "--partition", "9", "--dir", target, expect=1)
    assert "no partition 9" in r.stderr, r.stderr
    r = runnel(b, "logdirs", "describe", "--broker", "4242", expect=1)
    assert "4242" in r.stderr, r.stderr
    runnel(b, "logdirs", "move", "--topic", topic, "--dir", target, expect=2)
