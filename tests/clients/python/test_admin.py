"""Kafka's admin APIs through clients we did not write: configs (describe, alter,
incremental alter), partitions, records deletion, cluster and log-dir description, and
moving a partition between log dirs while it is produced to and consumed."""

import os
import struct
import time

import pytest
from confluent_kafka import KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, NewPartitions, NewTopic

import ck
import kwire
from harness import unique


def topic_config(a, topic):
    r = ConfigResource(ConfigResource.Type.TOPIC, topic)
    return a.describe_configs([r])[r].result(timeout=10)


def test_describe_configs_reports_values_and_sources(broker):
    a = ck.admin(broker)
    topic = unique("cfg")
    a.create_topics([NewTopic(topic, 1, 1, config={"retention.ms": "1000000"})])[topic].result(timeout=10)
    cfg = topic_config(a, topic)
    assert cfg["retention.ms"].value == "1000000"
    assert cfg["retention.ms"].source == ConfigResource.Type.UNKNOWN or cfg["retention.ms"].source == 1  # DYNAMIC_TOPIC_CONFIG
    assert cfg["cleanup.policy"].value == "delete"
    assert cfg["max.message.bytes"].value == "1048588"
    assert cfg["cleanup.policy"].source == 5  # DEFAULT_CONFIG
    assert len(cfg) >= 30, "every settable topic config is described"
    b = ConfigResource(ConfigResource.Type.BROKER, "1")
    bc = a.describe_configs([b])[b].result(timeout=10)
    assert bc["num.partitions"].value == "1"
    assert bc["auto.create.topics.enable"].value == "true"


def test_describe_configs_sources_and_synonyms_follow_kafka(start_broker):
    """Kafka's ConfigHelper: an unset topic config takes the source of the broker key it
    defaults to (the file's log.retention.hours makes retention.ms STATIC_BROKER_CONFIG),
    synonyms list every place a value comes from, and every broker key is described."""
    b = start_broker(log__retention__hours="2")
    a = ck.admin(b)
    topic = unique("syn")
    a.create_topics([NewTopic(topic, 1, 1, config={"segment.bytes": "2000000"})])[topic].result(timeout=10)
    cfg = topic_config(a, topic)
    retention = cfg["retention.ms"]
    assert retention.value == "7200000"
    assert retention.source == 4, retention  # STATIC_BROKER_CONFIG, from log.retention.hours
    assert "log.retention.hours" in retention.synonyms, retention.synonyms
    segment = cfg["segment.bytes"]
    assert segment.source == 1 and set(segment.synonyms) == {"segment.bytes", "log.segment.bytes"}
    assert cfg["cleanup.policy"].source == 5 and cfg["cleanup.policy"].synonyms == {}
    br = ConfigResource(ConfigResource.Type.BROKER, "1")
    bc = a.describe_configs([br])[br].result(timeout=10)
    assert (bc["log.retention.hours"].value, bc["log.retention.hours"].source) == ("2", 4)
    # Keys nobody set are described too, with their default or null (Kafka lists all).
    assert (bc["log.cleaner.enable"].value, bc["log.cleaner.enable"].source) == ("true", 5)
    assert bc["broker.rack"].value is None
    assert bc["ssl.keystore.password"].is_sensitive and bc["ssl.keystore.password"].value is None
    assert not bc["background.threads"].is_read_only and bc["num.io.threads"].value == "8"


def test_incremental_alter_configs_set_delete_append_subtract(broker):
    a = ck.admin(broker)
    topic = unique("inc")
    a.create_topics([NewTopic(topic, 1, 1)])[topic].result(timeout=10)
    r = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[
        ConfigEntry("retention.ms", "5000", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("cleanup.policy", "compact", incremental_operation=AlterConfigOpType.APPEND),
    ])
    a.incremental_alter_configs([r])[r].result(timeout=10)
    cfg = topic_config(a, topic)
    assert cfg["retention.ms"].value == "5000"
    assert cfg["cleanup.policy"].value == "delete,compact"
    r = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[
        ConfigEntry("retention.ms", None, incremental_operation=AlterConfigOpType.DELETE),
        ConfigEntry("cleanup.policy", "delete", incremental_operation=AlterConfigOpType.SUBTRACT),
    ])
    a.incremental_alter_configs([r])[r].result(timeout=10)
    cfg = topic_config(a, topic)
    assert cfg["retention.ms"].value == str(7 * 24 * 3600 * 1000)
    assert cfg["cleanup.policy"].value == "compact"


def test_bad_config_values_are_refused_by_name(broker):
    a = ck.admin(broker)
    topic = unique("bad")
    a.create_topics([NewTopic(topic, 1, 1)])[topic].result(timeout=10)
    for key, value in [("retention.ms", "abc"), ("no.such.config", "1"), ("min.cleanable.dirty.ratio", "2")]:
        r = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[
            ConfigEntry(key, value, incremental_operation=AlterConfigOpType.SET)])
        with pytest.raises(KafkaException) as e:
            a.incremental_alter_configs([r])[r].result(timeout=10)
        assert e.value.args[0].name() == "INVALID_CONFIG"
        assert key in e.value.args[0].str()
    missing = ConfigResource(ConfigResource.Type.TOPIC, unique("missing"), incremental_configs=[
        ConfigEntry("retention.ms", "1", incremental_operation=AlterConfigOpType.SET)])
    with pytest.raises(KafkaException) as e:
        a.incremental_alter_configs([missing])[missing].result(timeout=10)
    assert e.value.args[0].name() == "UNKNOWN_TOPIC_OR_PART"


def test_legacy_alter_configs_replaces_the_set(broker):
    a = ck.admin(broker)
    topic = unique("legacy")
    a.create_topics([NewTopic(topic, 1, 1, config={"retention.ms": "1000", "segment.ms": "100000"})])[topic].result(timeout=10)
    r = ConfigResource(ConfigResource.Type.TOPIC, topic, set_config={"retention.bytes": "12345"})
    a.alter_configs([r])[r].result(timeout=10)
    cfg = topic_config(a, topic)
    assert cfg["retention.bytes"].value == "12345"
    assert cfg["retention.ms"].source == 5, "keys not named return to their defaults"


def test_create_partitions_grows_and_never_shrinks(broker):
    a = ck.admin(broker)
    topic = ck.create_topic(broker, unique("grow"), partitions=2)
    a.create_partitions([NewPartitions(topic, 5)])[topic].result(timeout=10)
    ck.wait_for_topic(a, topic, 5)
    p = ck.producer(broker)
    d = ck.produce_all(p, topic, [{"value": b"x"}], partition=4)
    assert d.failed == []
    with pytest.raises(KafkaException) as e:
        a.create_partitions([NewPartitions(topic, 3)])[topic].result(timeout=10)
    assert e.value.args[0].name() == "INVALID_PARTITIONS"


def test_delete_records_moves_the_low_watermark(broker):
    a = ck.admin(broker)
    topic = ck.create_topic(broker, unique("delrec"))
    p = ck.producer(broker)
    assert ck.produce_all(p, topic, [{"value": b"%d" % i} for i in range(20)], partition=0).failed == []
    res = a.delete_records([TopicPartition(topic, 0, 12)])
    [f.result(timeout=10) for f in res.values()]
    low, high = ck.watermarks(broker, topic)
    assert (low, high) == (12, 20)
    got = ck.consume(broker, topic, start=12, count=8)
    assert [int(m.value()) for m in got] == list(range(12, 20))
    earliest = ck.admin(broker)  # ListOffsets earliest follows the new start
    low2, _ = ck.watermarks(broker, topic)
    assert low2 == 12


def test_describe_cluster_and_kafka_python_describe_configs(broker):
    a = ck.admin(broker)
    c = a.describe_cluster().result(timeout=10)
    assert [n.id for n in c.nodes] == [1]
    assert c.cluster_id and c.controller.id == 1
    from kafka.admin import ConfigResource as KCR, ConfigResourceType, KafkaAdminClient
    ka = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        topic = unique("kp")
        a = ck.admin(broker)
        a.create_topics([NewTopic(topic, 1, 1, config={"retention.ms": "4242"})])[topic].result(timeout=10)
        # kafka-python lists the configs that are not defaults.
        text = str(ka.describe_configs([KCR(ConfigResourceType.TOPIC, topic)]))
        assert "retention.ms" in text and "4242" in text
    finally:
        ka.close()


def alter_replica_log_dir(b, path, topic, partition):
    """AlterReplicaLogDirs v1 by hand (no client we test exposes it)."""
    host, port = b.address
    with kwire.Conn(host, port) as c:
        body = struct.pack(">i", 1) + kwire.string(path) + struct.pack(">i", 1) + kwire.string(topic) + struct.pack(">ii", 1, partition)
        r = c.request(34, 1, body)
        r.int32()  # throttle
        assert r.int32() == 1
        assert r.string() == topic
        assert r.int32() == 1
        assert r.int32() == partition
        return r.int16()


@pytest.mark.timeout_s(90)
def test_partitions_spread_over_log_dirs_and_move_online(start_broker, tmp_path):
    dirs = [str(tmp_path / "disk1"), str(tmp_path / "disk2")]
    b = start_broker(log__dirs=",".join(dirs))
    topic = ck.create_topic(b, unique("move"), partitions=4)
    p = ck.producer(b, acks="all")
    assert ck.produce_all(p, topic, [{"value": b"%d" % i} for i in range(200)], partition=0).failed == []
    # A partition's directory is made by its first write (placement is decided at creation).
    for partition in (1, 2, 3):
        assert ck.produce_all(p, topic, [{"value": b"x"}], partition=partition).failed == []
    placed = {d: sorted(x for x in os.listdir(d) if x.startswith(topic)) for d in dirs}
    assert all(len(v) == 2 for v in placed.values()), f"new partitions go to the emptiest dir: {placed}"
    source = next(d for d in dirs if f"{topic}-0" in placed[d])
    target = next(d for d in dirs if d != source)
    assert alter_replica_log_dir(b, target, topic, 0) == 0
    assert os.path.isdir(os.path.join(target, f"{topic}-0")) and not os.path.exists(os.path.join(source, f"{topic}-0"))
    assert ck.produce_all(p, topic, [{"value": b"%d" % i} for i in range(200, 300)], partition=0).failed == []
    got = ck.consume(b, topic, start=0, count=300)
    assert [int(m.value()) for m in got] == list(range(300))
    assert alter_replica_log_dir(b, str(tmp_path / "elsewhere"), topic, 0) == 57  # LOG_DIR_NOT_FOUND
    b.restart()
    got = ck.consume(b, topic, start=0, count=300)
    assert [int(m.value()) for m in got] == list(range(300)), "the moved partition is found after a restart"


@pytest.mark.timeout_s(60)
def test_dynamic_broker_configs_apply_at_once_and_persist(start_broker):
    b = start_broker()
    a = ck.admin(b)
    topic = ck.create_topic(b, unique("dyn"))
    br = ConfigResource(ConfigResource.Type.BROKER, "1", incremental_configs=[
        ConfigEntry("log.retention.ms", "12345", incremental_operation=AlterConfigOpType.SET)])
    a.incremental_alter_configs([br])[br].result(timeout=10)
    assert topic_config(a, topic)["retention.ms"].value == "12345", "topics without an override follow at once"
    static = ConfigResource(ConfigResource.Type.BROKER, "1", incremental_configs=[
        ConfigEntry("num.partitions", "3", incremental_operation=AlterConfigOpType.SET)])
    with pytest.raises(KafkaException) as e:
        a.incremental_alter_configs([static])[static].result(timeout=10)
    assert "num.partitions" in e.value.args[0].str()
    b.restart()
    a = ck.admin(b)
    desc = ConfigResource(ConfigResource.Type.BROKER, "1")
    entry = a.describe_configs([desc])[desc].result(timeout=10)["log.retention.ms"]
    assert entry.value == "12345" and entry.source == 2 and not entry.is_read_only  # DYNAMIC_BROKER_CONFIG
    assert topic_config(a, topic)["retention.ms"].value == "12345"


@pytest.mark.timeout_s(120)
def test_move_between_log_dirs_while_producing_and_consuming(start_broker, tmp_path):
    import threading
    dirs = [str(tmp_path / "d1"), str(tmp_path / "d2")]
    b = start_broker(log__dirs=",".join(dirs))
    topic = ck.create_topic(b, unique("live"), partitions=1)
    acked, stop = [], threading.Event()

    def produce():
        p = Producer({"bootstrap.servers": b.bootstrap, "acks": "all", "linger.ms": 2, "enable.idempotence": True})
        i = 0
        while not stop.is_set():
            p.produce(topic, value=b"%08d" % i, partition=0,
                      on_delivery=lambda err, m: acked.append(int(m.value())) if err is None else None)
            i += 1
            p.poll(0)
            if i % 500 == 0:
                time.sleep(0.01)
        assert p.flush(30) == 0

    t = threading.Thread(target=produce)
    t.start()
    try:
        time.sleep(1.0)
        for _ in range(4):  # back and forth under load
            here = next(d for d in dirs if os.path.isdir(os.path.join(d, f"{topic}-0")))
            there = next(d for d in dirs if d != here)
            assert alter_replica_log_dir(b, there, topic, 0) == 0
            time.sleep(0.5)
    finally:
        stop.set()
        t.join(60)
    assert len(acked) > 1000
    got = ck.consume(b, topic, start=0, count=len(acked), timeout=60)
    assert sorted(int(m.value()) for m in got) == sorted(acked), "every acknowledged record is there once"
    assert [int(m.value()) for m in got] == sorted(acked), "in produce order"
