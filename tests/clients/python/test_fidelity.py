"""What librdkafka's own test suite expects of a Kafka 4 broker (issue 20), checked on
one node: per-record errors in Produce (KIP-467, librdkafka test 0011), and the admin
behaviour of test 0081: Kafka's dynamic broker keys accepted, group configs (config
resource GROUP) described, altered and used, authorized operations (KIP-430).

The group coordinator's timing (pending members, session deadlines) is covered by Rust
tests in crates/broker/src/coordinators/groups/mod.rs; fetch from follower (KIP-392) by
test_cluster.py.
"""

import struct

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicCollection, TopicPartition
from confluent_kafka.admin import AclOperation, AlterConfigOpType, ConfigEntry, ConfigResource, ConfigSource, NewTopic

import ck
import kwire
from test_share_groups import find_coordinator
from harness import unique


def create_compacted(broker, name):
    a = ck.admin(broker)
    a.create_topics([NewTopic(name, 1, 1, config={"cleanup.policy": "compact"})])[name].result(timeout=10)
    ck.wait_for_topic(a, name, 1)
    return name


def test_keyless_records_on_a_compacted_topic_are_named_one_by_one(broker):
    topic = create_compacted(broker, unique("kip467"))
    # librdkafka test 0011: one batch of 100 records, every tenth without a key.
    # A long linger keeps the 100 records in one batch even on a loaded machine.
    p = ck.producer(broker, linger_ms=5000, retries=0, batch_num_messages=1000)
    records = [{"value": f"v{i}".encode()} if i % 10 == 0 else {"key": f"k{i}".encode(), "value": f"v{i}".encode()}
               for i in range(100)]
    d = ck.produce_all(p, topic, records, partition=0)
    assert d.ok == []
    codes = {}
    for err, key, _ in d.failed:
        codes.setdefault(err.code(), []).append(key)
    # Kafka names the 10 keyless records (INVALID_RECORD); librdkafka fails the other 90
    # as collateral (_INVALID_DIFFERENT_RECORD), not as bad records.
    assert sorted(codes) == sorted([KafkaError.INVALID_RECORD, KafkaError._INVALID_DIFFERENT_RECORD]), codes
    assert codes[KafkaError.INVALID_RECORD] == [None] * 10
    assert len(codes[KafkaError._INVALID_DIFFERENT_RECORD]) == 90
    assert ck.watermarks(broker, topic) == (0, 0)

    # On the wire: record_errors carry each bad record's index in the batch.
    batch = kwire.record_batch([(None if i % 3 == 0 else b"k", b"v") for i in range(7)])
    with kwire.Conn(*broker.address) as c:
        err, base, record_errors, message = c.produce_v8(topic, 0, batch)
    assert err == kwire.INVALID_RECORD
    assert [i for i, _ in record_errors] == [0, 3, 6]
    assert all("without key" in m for _, m in record_errors), record_errors
    assert "3 record errors" in message, message


def test_kafkas_dynamic_broker_keys_are_accepted_stored_and_reported(start_broker):
    b = start_broker()
    a = ck.admin(b)
    r = ConfigResource(ConfigResource.Type.BROKER, "1", incremental_configs=[
        ConfigEntry("sasl.kerberos.min.time.before.relogin", "58000", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("num.io.threads", "4", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("ssl.keystore.password", "secret", incremental_operation=AlterConfigOpType.SET),
    ])
    a.incremental_alter_configs([r])[r].result(timeout=10)
    described = ConfigResource(ConfigResource.Type.BROKER, "1")

    def check(cfg):
        entry = cfg["sasl.kerberos.min.time.before.relogin"]
        assert entry.value == "58000" and entry.source == ConfigSource.DYNAMIC_BROKER_CONFIG.value
        assert not entry.is_read_only
        assert cfg["num.io.threads"].value == "4"
        # Passwords are never sent back.
        assert cfg["ssl.keystore.password"].is_sensitive and cfg["ssl.keystore.password"].value is None

    check(a.describe_configs([described])[described].result(timeout=10))
    # A malformed value is refused by name, and nothing changes.
    bad = ConfigResource(ConfigResource.Type.BROKER, "1", incremental_configs=[
        ConfigEntry("sasl.kerberos.min.time.before.relogin", "soon", incremental_operation=AlterConfigOpType.SET),
    ])
    with pytest.raises(KafkaException) as e:
        a.incremental_alter_configs([bad])[bad].result(timeout=10)
    assert e.value.args[0].code() == KafkaError.INVALID_CONFIG
    assert "sasl.kerberos.min.time.before.relogin" in str(e.value)
    # Stored: a restart keeps them.
    b.restart()
    a = ck.admin(b)
    check(a.describe_configs([described])[described].result(timeout=10))


def consumer_group_heartbeat(conn, group, member_id="", epoch=0, topics=("t",)):
    """ConsumerGroupHeartbeat v0 (flexible). -> (error, member_id, epoch, heartbeat_interval_ms)"""
    body = kwire.compact_string(group) + kwire.compact_string(member_id) + struct.pack(">i", epoch)
    body += kwire.compact_string(None) + kwire.compact_string(None)  # instance id, rack id
    body += struct.pack(">i", 30000)  # rebalance timeout
    if topics is None:
        body += kwire.uvarint(0)
    else:
        body += kwire.uvarint(len(topics) + 1) + b"".join(kwire.compact_string(t) for t in topics)
    body += kwire.compact_string(None)  # server assignor
    body += kwire.uvarint(0)  # owned topic partitions: null
    body += kwire.uvarint(0)  # tagged fields
    r = conn.request(68, 0, body, header_version=2)
    r.take(1)  # response header tagged fields
    r.int32()  # throttle
    err = r.int16()
    n = r.uvarint()
    if n > 0:
        r.take(n - 1)  # error message
    n = r.uvarint()
    member = r.take(n - 1).decode() if n > 0 else None
    return err, member, r.int32(), r.int32()


def group_configs(a, group):
    r = ConfigResource(ConfigResource.Type.GROUP, group)
    return a.describe_configs([r])[r].result(timeout=10)


def test_group_configs_are_described_validated_and_used(broker):
    a = ck.admin(broker)
    group = unique("gcfg")
    cfg = group_configs(a, group)
    assert {k: v.value for k, v in cfg.items()} == {
        "consumer.session.timeout.ms": "45000",
        "consumer.heartbeat.interval.ms": "5000",
        "share.session.timeout.ms": "45000",
        "share.heartbeat.interval.ms": "5000",
        "share.record.lock.duration.ms": "30000",
        "share.auto.offset.reset": "latest",
        "share.isolation.level": "read_uncommitted",
    }
    assert cfg["consumer.session.timeout.ms"].source == ConfigSource.DEFAULT_CONFIG.value

    r = ConfigResource(ConfigResource.Type.GROUP, group, incremental_configs=[
        ConfigEntry("consumer.heartbeat.interval.ms", "6000", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("share.auto.offset.reset", "earliest", incremental_operation=AlterConfigOpType.SET),
    ])
    a.incremental_alter_configs([r])[r].result(timeout=10)
    cfg = group_configs(a, group)
    assert cfg["consumer.heartbeat.interval.ms"].value == "6000"
    assert cfg["consumer.heartbeat.interval.ms"].source == ConfigSource.GROUP_CONFIG.value
    assert cfg["share.auto.offset.reset"].value == "earliest"

    # Kafka's bounds: group.consumer.min.session.timeout.ms is 45 s.
    for key, value in [("consumer.session.timeout.ms", "1000"), ("no.such.group.config", "1"),
                       ("share.auto.offset.reset", "sometimes")]:
        bad = ConfigResource(ConfigResource.Type.GROUP, group, incremental_configs=[
            ConfigEntry(key, value, incremental_operation=AlterConfigOpType.SET)])
        with pytest.raises(KafkaException) as e:
            a.incremental_alter_configs([bad])[bad].result(timeout=10)
        assert e.value.args[0].code() == KafkaError.INVALID_CONFIG, (key, e.value)

    # The KIP-848 coordinator tells the group's members the group's heartbeat interval.
    topic = ck.create_topic(broker, unique("gcfg-t"))
    other = unique("gcfg-other")
    for g in (group, other):
        find_coordinator(broker, g)  # as a client does before it talks to a group
    with kwire.Conn(*broker.address) as c:
        err, member, epoch, interval = consumer_group_heartbeat(c, group, topics=(topic,))
        assert err == 0 and epoch >= 1, err
        assert interval == 6000
        assert consumer_group_heartbeat(c, other, topics=(topic,))[3] == 5000
        consumer_group_heartbeat(c, group, member, -1, topics=None)

    r = ConfigResource(ConfigResource.Type.GROUP, group, incremental_configs=[
        ConfigEntry("consumer.heartbeat.interval.ms", None, incremental_operation=AlterConfigOpType.DELETE)])
    a.incremental_alter_configs([r])[r].result(timeout=10)
    assert group_configs(a, group)["consumer.heartbeat.interval.ms"].value == "5000"


def names(ops):
    return {op.name for op in ops}


def test_authorized_operations_are_all_of_kafkas_without_an_authorizer(broker):
    a = ck.admin(broker)
    cluster = a.describe_cluster(include_authorized_operations=True).result(timeout=10)
    assert names(cluster.authorized_operations) == {
        "CREATE", "CLUSTER_ACTION", "DESCRIBE_CONFIGS", "ALTER_CONFIGS", "IDEMPOTENT_WRITE", "ALTER", "DESCRIBE"}
    assert a.describe_cluster().result(timeout=10).authorized_operations is None

    topic = ck.create_topic(broker, unique("kip430"))
    t = a.describe_topics(TopicCollection([topic]), include_authorized_operations=True)[topic].result(timeout=10)
    assert names(t.authorized_operations) == {
        "READ", "WRITE", "CREATE", "DESCRIBE", "DELETE", "ALTER", "DESCRIBE_CONFIGS", "ALTER_CONFIGS"}

    group = unique("kip430-g")
    c = ck.consumer(broker, {"group.id": group})
    try:
        c.commit(offsets=[TopicPartition(topic, 0, 0)], asynchronous=False)
    finally:
        c.close()
    g = a.describe_consumer_groups([group], include_authorized_operations=True)[group].result(timeout=10)
    assert names(g.authorized_operations) == {"READ", "DESCRIBE", "DELETE", "DESCRIBE_CONFIGS", "ALTER_CONFIGS"}
    assert AclOperation.READ in g.authorized_operations
