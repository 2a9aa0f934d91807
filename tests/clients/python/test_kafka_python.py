"""kafka-python 3.x against Runnel with the client's defaults: it probes versions with
ApiVersions, and its KafkaProducer turns on idempotence and acks=all by default."""

import time

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import InvalidTopicError, TopicAlreadyExistsError, UnknownTopicOrPartitionError

from harness import unique


def admin(broker):
    return KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=10000)


def consumer(broker):
    return KafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False,
                         request_timeout_ms=15000, fetch_max_wait_ms=200)


def read(c, tp, count, timeout=20):
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < count and time.monotonic() < deadline:
        for recs in c.poll(timeout_ms=200).values():
            out.extend(recs)
    assert len(out) >= count, f"read {len(out)} of {count} records from {tp} in {timeout}s"
    return out


def create(broker, name, partitions):
    a = admin(broker)
    try:
        a.create_topics({name: {"num_partitions": partitions, "replication_factor": 1}},
                        wait_for_metadata=True, timeout_ms=10000)
    finally:
        a.close()
    return name


def test_producer_defaults_are_idempotent_acks_all(broker):
    topic = create(broker, unique("kp"), 2)
    p = KafkaProducer(bootstrap_servers=broker.bootstrap)
    assert p.config["enable_idempotence"] is True and p.config["acks"] == -1
    try:
        futs = [p.send(topic, key=f"k{i}".encode(), value=f"v{i}".encode(),
                       headers=[("i", str(i).encode()), ("e", b"")]) for i in range(300)]
        p.flush(20)
        metas = [f.get(timeout=20) for f in futs]
        # The records went out as an idempotent producer: InitProducerId gave it an id.
        assert p._transaction_manager is not None
        assert p._transaction_manager.producer_id_and_epoch.producer_id >= 0
    finally:
        p.close(5)
    by_part = {}
    for i, m in enumerate(metas):
        by_part.setdefault(m.partition, []).append((m.offset, i))
    for part, got in by_part.items():
        assert [o for o, _ in got] == list(range(len(got)))

    c = consumer(broker)
    try:
        for part, got in by_part.items():
            tp = TopicPartition(topic, part)
            c.assign([tp])
            c.seek(tp, 0)
            recs = read(c, tp, len(got))
            assert [(r.offset, r.value) for r in recs] == [(o, f"v{i}".encode()) for o, i in got]
            i0 = got[0][1]
            assert recs[0].key == f"k{i0}".encode()
            assert [(h[0], h[1]) for h in recs[0].headers] == [("i", str(i0).encode()), ("e", b"")]
    finally:
        c.close()


def test_seek_and_offsets_api(broker):
    topic = create(broker, unique("kpo"), 1)
    base = 1_650_000_000_000
    p = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=0)
    try:
        for i in range(20):
            p.send(topic, value=f"m{i}".encode(), partition=0, timestamp_ms=base + 100 * i).get(timeout=20)
    finally:
        p.close(5)
    tp = TopicPartition(topic, 0)
    c = consumer(broker)
    try:
        assert c.partitions_for_topic(topic) == {0}
        assert c.beginning_offsets([tp]) == {tp: 0}
        assert c.end_offsets([tp]) == {tp: 20}
        r = c.offsets_for_times({tp: base + 550})
        assert r[tp].offset == 6 and r[tp].timestamp == base + 600
        r = c.offsets_for_times({tp: base})
        assert r[tp].offset == 0
        r = c.offsets_for_times({tp: base + 100 * 20})
        assert r[tp] is None  # nothing at or after that time
        c.assign([tp])
        c.seek(tp, 15)
        recs = read(c, tp, 5)
        assert [(r.offset, r.value, r.timestamp) for r in recs] == \
            [(i, f"m{i}".encode(), base + 100 * i) for i in range(15, 20)]
        c.seek_to_beginning(tp)
        assert read(c, tp, 1)[0].offset == 0
    finally:
        c.close()


def test_producer_partitions_for_and_auto_create(broker):
    topic = unique("kpauto")
    p = KafkaProducer(bootstrap_servers=broker.bootstrap, max_block_ms=15000)
    try:
        assert p.partitions_for(topic) == {0}  # metadata request auto-creates with num.partitions=1
        m = p.send(topic, value=b"first").get(timeout=20)
        assert (m.partition, m.offset) == (0, 0)
    finally:
        p.close(5)


def test_admin_create_list_describe_delete(broker):
    a = admin(broker)
    try:
        n1, n2 = unique("kadm"), unique("kadm")
        a.create_topics({n1: {"num_partitions": 4, "replication_factor": 1},
                         n2: {}},  # broker defaults: num.partitions (1), replication 1
                        wait_for_metadata=True, timeout_ms=10000)
        topics = a.list_topics()
        assert n1 in topics and n2 in topics
        desc = {t["name"]: t for t in a.describe_topics([n1, n2])}
        assert len(desc[n1]["partitions"]) == 4
        assert len(desc[n2]["partitions"]) == 1
        assert all(p["error_code"] == 0 and p["leader_id"] >= 0 for p in desc[n1]["partitions"])

        with pytest.raises(TopicAlreadyExistsError):
            a.create_topics({n1: {"num_partitions": 1, "replication_factor": 1}})
        with pytest.raises(InvalidTopicError):
            a.create_topics({"no good": {"num_partitions": 1, "replication_factor": 1}})

        a.delete_topics([n1], timeout_ms=10000)
        deadline = time.monotonic() + 10
        while n1 in a.list_topics() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert n1 not in a.list_topics()
        with pytest.raises(UnknownTopicOrPartitionError):
            a.delete_topics([n1], timeout_ms=10000)
    finally:
        a.close()


def test_gzip_producer_and_large_batches(broker):
    topic = create(broker, unique("kgz"), 1)
    p = KafkaProducer(bootstrap_servers=broker.bootstrap, compression_type="gzip", linger_ms=20,
                      batch_size=256 * 1024)
    values = [(f"{i} " + "lorem ipsum " * 50).encode() for i in range(2000)]
    try:
        futs = [p.send(topic, value=v, partition=0) for v in values]
        p.flush(30)
        offs = [f.get(timeout=20).offset for f in futs]
    finally:
        p.close(5)
    assert offs == list(range(2000))
    tp = TopicPartition(topic, 0)
    c = consumer(broker)
    try:
        c.assign([tp])
        c.seek(tp, 0)
        recs = read(c, tp, 2000, timeout=30)
        assert [r.value for r in recs] == values
    finally:
        c.close()
