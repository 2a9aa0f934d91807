"""confluent-kafka (librdkafka 2.16) against Runnel, with the client's own defaults
except where a test says otherwise."""

import json
import threading
import time

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import NewTopic, OffsetSpec

import ck
import kwire
from harness import unique

MESSAGE_MAX_BYTES = 1048588  # Kafka's and Runnel's default message.max.bytes


def records(n, prefix="v"):
    return [{"key": f"k{i}".encode(), "value": f"{prefix}{i}".encode()} for i in range(n)]


# ---------------------------------------------------------------- produce / consume


def test_produce_then_consume_with_assign(broker):
    topic = ck.create_topic(broker, unique("basic"))
    p = ck.producer(broker)
    d = ck.produce_all(p, topic, records(100), partition=0)
    assert d.failed == []
    assert [o for (_, o, _, _) in d.ok] == list(range(100))
    msgs = ck.consume(broker, topic, 0, start=0)
    assert [(m.offset(), m.key(), m.value()) for m in msgs] == \
        [(i, f"k{i}".encode(), f"v{i}".encode()) for i in range(100)]
    now_ms = time.time() * 1000
    for m in msgs:
        ts_type, ts = m.timestamp()
        assert ts_type == 1, "CreateTime expected"  # TIMESTAMP_CREATE_TIME
        assert now_ms - 60_000 < ts <= now_ms + 1000
    # From the middle, and from the end.
    assert [m.offset() for m in ck.consume(broker, topic, 0, start=37)] == list(range(37, 100))
    assert ck.consume(broker, topic, 0, start=100) == []


def test_records_spread_over_partitions_by_key(broker):
    topic = ck.create_topic(broker, unique("parts"), partitions=3)
    p = ck.producer(broker)
    d = ck.produce_all(p, topic, records(300))
    assert d.failed == []
    by_part = {}
    for part, off, k, v in d.ok:
        by_part.setdefault(part, []).append((off, k, v))
    assert len(by_part) == 3, f"keys landed on partitions {sorted(by_part)} only"
    for part, got in by_part.items():
        got.sort()
        assert [o for o, _, _ in got] == list(range(len(got))), "offsets per partition are dense from 0"
        msgs = ck.consume(broker, topic, part)
        assert [(m.offset(), m.key(), m.value()) for m in msgs] == got
        # The same key always maps to the same partition (murmur2 in librdkafka's consistent_random).
    assert sum(len(v) for v in by_part.values()) == 300


@pytest.mark.parametrize("acks", ["0", "1", "all"])
def test_acks(broker, acks):
    topic = ck.create_topic(broker, unique(f"acks{acks}"))
    p = ck.producer(broker, acks=acks)
    d = ck.produce_all(p, topic, records(200), partition=0)
    assert d.failed == []
    assert len(d.ok) == 200
    if acks != "0":
        assert [o for (_, o, _, _) in d.ok] == list(range(200))
    # acks=0 gets no offsets back, but every record must still arrive, in order.
    deadline = time.monotonic() + 10
    while ck.watermarks(broker, topic)[1] < 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert ck.watermarks(broker, topic) == (0, 200)
    msgs = ck.consume(broker, topic)
    assert [m.value() for m in msgs] == [f"v{i}".encode() for i in range(200)]


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_every_codec(broker, codec):
    topic = ck.create_topic(broker, unique(codec))
    p = ck.producer(broker, compression_type=codec, linger_ms=50, batch_num_messages=1000)
    values = [(f"record {i} " + "compressible text " * 20).encode() for i in range(500)]
    d = ck.produce_all(p, topic, [{"value": v, "key": str(i).encode()} for i, v in enumerate(values)], partition=0)
    assert d.failed == []
    assert sorted(o for (_, o, _, _) in d.ok) == list(range(500))
    msgs = ck.consume(broker, topic)
    assert [m.value() for m in msgs] == values
    assert [m.offset() for m in msgs] == list(range(500))
    # Start in the middle of a compressed batch: the client skips what it did not ask for.
    assert [m.offset() for m in ck.consume(broker, topic, start=321)] == list(range(321, 500))


def test_idempotent_producer(broker):
    topic = ck.create_topic(broker, unique("idem"), partitions=2)
    p = ck.producer(broker, enable_idempotence=True, linger_ms=2)
    d = ck.produce_all(p, topic, records(2000))
    assert d.failed == []
    for part in (0, 1):
        sent = sorted((o, v) for (pp, o, _, v) in d.ok if pp == part)
        assert [o for o, _ in sent] == list(range(len(sent)))
        msgs = ck.consume(broker, topic, part)
        assert [(m.offset(), m.value()) for m in msgs] == sent
    # Per-key order is the produce order.
    assert len(d.ok) == 2000


def test_headers_null_key_null_value(broker):
    topic = ck.create_topic(broker, unique("hdr"))
    p = ck.producer(broker)
    recs = [
        {"key": b"k", "value": b"v", "headers": [("a", b"1"), ("nullh", None), ("a", b"2"), ("empty", b"")]},
        {"key": None, "value": b"no key"},
        {"key": b"tombstone", "value": None},
        {"key": b"", "value": b""},
        {"key": None, "value": None, "headers": [("only", b"header")]},
        {"key": b"\x00\xff binary", "value": bytes(range(256))},
    ]
    d = ck.produce_all(p, topic, recs, partition=0)
    assert d.failed == []
    msgs = ck.consume(broker, topic)
    assert len(msgs) == len(recs)
    got = [(m.key(), m.value(), m.headers()) for m in msgs]
    assert got[0] == (b"k", b"v", [("a", b"1"), ("nullh", None), ("a", b"2"), ("empty", b"")])
    assert got[1] == (None, b"no key", None)
    assert got[2] == (b"tombstone", None, None)
    assert got[3] == (b"", b"", None)
    assert got[4] == (None, None, [("only", b"header")])
    assert got[5] == (b"\x00\xff binary", bytes(range(256)), None)


# ---------------------------------------------------------------- size limits


def test_record_at_the_size_limit_is_stored(broker):
    topic = ck.create_topic(broker, unique("big"))
    # value length whose one-record batch is exactly message.max.bytes (with log overhead)
    v = kwire.value_len_for_batch_size(MESSAGE_MAX_BYTES)
    p = ck.producer(broker, message_max_bytes=10_000_000, linger_ms=0)
    value = bytes(i % 251 for i in range(v))
    d = ck.produce_all(p, topic, [{"value": value}], partition=0)
    assert d.failed == [], f"a batch of exactly message.max.bytes was refused: {d.failed[0][0]}"
    assert [o for (_, o, _, _) in d.ok] == [0]
    msgs = ck.consume(broker, topic)
    assert len(msgs) == 1 and msgs[0].value() == value


def test_record_over_the_size_limit_is_refused_and_not_stored(broker):
    topic = ck.create_topic(broker, unique("toobig"))
    # librdkafka's own limit is raised so that the broker is the one that refuses.
    p = ck.producer(broker, message_max_bytes=10_000_000, linger_ms=0, message_send_max_retries=0)
    small = ck.produce_all(p, topic, [{"value": b"before"}], partition=0)
    assert small.failed == []
    v = kwire.value_len_for_batch_size(MESSAGE_MAX_BYTES + 1)  # a batch one byte over
    d = ck.produce_all(p, topic, [{"value": b"x" * v}], partition=0)
    assert d.ok == [], "a batch one byte over message.max.bytes was accepted"
    assert len(d.failed) == 1
    assert d.failed[0][0].code() == KafkaError.MSG_SIZE_TOO_LARGE, d.failed[0][0]
    d2 = ck.produce_all(p, topic, [{"value": b"y" * (5 * 1024 * 1024)}], partition=0)
    assert [e.code() for (e, _, _) in d2.failed] == [KafkaError.MSG_SIZE_TOO_LARGE]
    after = ck.produce_all(p, topic, [{"value": b"after"}], partition=0)
    assert after.failed == [] and after.ok[0][1] == 1, "the refused batches took offsets"
    assert ck.watermarks(broker, topic) == (0, 2)
    assert [m.value() for m in ck.consume(broker, topic)] == [b"before", b"after"]


# ---------------------------------------------------------------- admin


def test_admin_create_list_delete(broker):
    a = ck.admin(broker)
    names = [unique("adm"), unique("adm")]
    fs = a.create_topics([NewTopic(names[0], 3, 1), NewTopic(names[1], 1, 1)], operation_timeout=10)
    for n in names:
        fs[n].result(15)
    md = a.list_topics(timeout=10)
    assert set(names) <= set(md.topics)
    assert len(md.topics[names[0]].partitions) == 3
    assert len(md.topics[names[1]].partitions) == 1
    assert len(md.brokers) == 1
    b = next(iter(md.brokers.values()))
    assert (b.host, b.port) == ("127.0.0.1", broker.port)
    for p in md.topics[names[0]].partitions.values():
        assert p.leader == b.id and p.replicas == [b.id] and p.isrs == [b.id]

    # Creating it again: TOPIC_ALREADY_EXISTS.
    fs = a.create_topics([NewTopic(names[0], 3, 1)])
    with pytest.raises(KafkaException) as e:
        fs[names[0]].result(15)
    assert e.value.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS

    fs = a.delete_topics([names[0]], operation_timeout=10)
    fs[names[0]].result(15)
    deadline = time.monotonic() + 10
    while names[0] in a.list_topics(timeout=10).topics and time.monotonic() < deadline:
        time.sleep(0.1)
    md = a.list_topics(timeout=10)
    assert names[0] not in md.topics
    assert names[1] in md.topics

    # Deleting an unknown topic: UNKNOWN_TOPIC_OR_PART.
    fs = a.delete_topics([unique("nosuch")], operation_timeout=10)
    with pytest.raises(KafkaException) as e:
        list(fs.values())[0].result(15)
    assert e.value.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART


def test_deleted_topic_recreated_is_empty(broker):
    topic = ck.create_topic(broker, unique("recreate"))
    p = ck.producer(broker)
    assert ck.produce_all(p, topic, records(10), partition=0).failed == []
    a = ck.admin(broker)
    a.delete_topics([topic], operation_timeout=10)[topic].result(15)
    deadline = time.monotonic() + 10
    while topic in a.list_topics(timeout=10).topics and time.monotonic() < deadline:
        time.sleep(0.1)
    ck.create_topic(broker, topic, partitions=2)
    assert ck.watermarks(broker, topic, 0) == (0, 0)
    assert ck.watermarks(broker, topic, 1) == (0, 0)


@pytest.mark.parametrize("name", ["bad name", "a/b", "..", ".", "x" * 250, "caf\u00e9", "star*"])
def test_invalid_topic_names_refused_on_create(broker, name):
    a = ck.admin(broker)
    fs = a.create_topics([NewTopic(name, 1, 1)], operation_timeout=10)
    with pytest.raises(KafkaException) as e:
        fs[name].result(15)
    assert e.value.args[0].code() == KafkaError.TOPIC_EXCEPTION, e.value.args[0]
    assert name not in a.list_topics(timeout=10).topics


def test_invalid_partition_count_refused(broker):
    a = ck.admin(broker)
    name = unique("zero")
    fs = a.create_topics([NewTopic(name, 0, 1)], operation_timeout=10)
    with pytest.raises(KafkaException) as e:
        fs[name].result(15)
    assert e.value.args[0].code() == KafkaError.INVALID_PARTITIONS, e.value.args[0]


def test_auto_topic_creation_on_produce(broker):
    topic = unique("auto")
    p = ck.producer(broker)
    d = ck.produce_all(p, topic, records(5))
    assert d.failed == [], d.failed
    assert sorted(o for (_, o, _, _) in d.ok) == list(range(5))
    md = ck.admin(broker).list_topics(topic=topic, timeout=10)
    assert len(md.topics[topic].partitions) == 1, "num.partitions defaults to 1"
    assert [m.value() for m in ck.consume(broker, topic)] == [f"v{i}".encode() for i in range(5)]


def test_auto_create_uses_num_partitions(start_broker):
    b = start_broker(num__partitions=3)
    topic = unique("auto3")
    d = ck.produce_all(ck.producer(b), topic, records(30))
    assert d.failed == []
    assert {pp for (pp, _, _, _) in d.ok} == {0, 1, 2}
    assert len(ck.admin(b).list_topics(topic=topic, timeout=10).topics[topic].partitions) == 3


def test_no_auto_create_when_disabled(start_broker):
    b = start_broker(auto__create__topics__enable="false")
    topic = unique("noauto")
    p = ck.producer(b, message_timeout_ms=3000)
    d = ck.produce_all(p, topic, records(1), timeout=15)
    assert d.ok == []
    assert [e.code() for (e, _, _) in d.failed][0] in (
        KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._MSG_TIMED_OUT), d.failed
    md = ck.admin(b).list_topics(timeout=10)
    assert topic not in md.topics
    # Explicit creation still works.
    ck.create_topic(b, topic)
    assert ck.produce_all(ck.producer(b), topic, records(1)).failed == []


def test_metadata_without_auto_create_does_not_create(broker):
    # A librdkafka consumer asks for metadata with allow_auto_topic_creation=false
    # (allow.auto.create.topics defaults to false for consumers, true for producers).
    name = unique("ghost")
    c = ck.consumer(broker)
    try:
        md = c.list_topics(topic=name, timeout=10)
    finally:
        c.close()
    t = md.topics.get(name)
    assert t is not None and t.error is not None
    assert t.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART
    assert name not in ck.admin(broker).list_topics(timeout=10).topics


# ---------------------------------------------------------------- offsets


def test_offsets_for_times_and_watermarks(broker):
    topic = ck.create_topic(broker, unique("times"))
    base = 1_700_000_000_000
    stamps = [base + 1000 * i for i in range(10)]  # 10 records, 1 s apart (CreateTime)
    p = ck.producer(broker, linger_ms=0)
    for i, ts in enumerate(stamps):  # one batch each, so the time index has many entries
        d = ck.produce_all(p, topic, [{"value": f"at{i}".encode(), "timestamp": ts}], partition=0)
        assert d.failed == []
    msgs = ck.consume(broker, topic)
    assert [m.timestamp() for m in msgs] == [(1, ts) for ts in stamps]
    assert ck.watermarks(broker, topic) == (0, 10)

    c = ck.consumer(broker)
    try:
        def lookup(ts):
            r = c.offsets_for_times([TopicPartition(topic, 0, ts)], timeout=10)
            assert r[0].error is None, r[0].error
            return r[0].offset
        assert lookup(0) == 0
        assert lookup(base) == 0
        assert lookup(base + 1) == 1
        assert lookup(base + 4500) == 5
        assert lookup(base + 9000) == 9
        assert lookup(base + 9001) == -1  # after the last record: no offset (OFFSET_END)
    finally:
        c.close()


def test_offsets_by_timestamp_within_batches_and_max_timestamp(broker):
    topic = ck.create_topic(broker, unique("maxts"))
    base = 1_600_000_000_000
    stamps = [base + 10, base + 50, base + 30, base + 20]  # one batch, out of order
    p = ck.producer(broker, linger_ms=100)
    d = ck.produce_all(p, topic, [{"value": f"r{i}".encode(), "timestamp": ts} for i, ts in enumerate(stamps)],
                       partition=0)
    assert d.failed == []
    a = ck.admin(broker)
    tp = TopicPartition(topic, 0)

    def list_offsets(spec):
        r = a.list_offsets({tp: spec}, request_timeout=10)[tp].result(15)
        return r.offset, r.timestamp

    assert list_offsets(OffsetSpec.earliest())[0] == 0
    assert list_offsets(OffsetSpec.latest())[0] == 4
    assert list_offsets(OffsetSpec.max_timestamp()) == (1, base + 50)
    assert list_offsets(OffsetSpec.for_timestamp(base + 25))[0] == 1  # first with ts >= 25
    assert list_offsets(OffsetSpec.for_timestamp(base + 15))[0] == 1
    assert list_offsets(OffsetSpec.for_timestamp(base))[0] == 0


def test_watermarks_on_unknown_partition(broker):
    topic = ck.create_topic(broker, unique("wm"))
    c = ck.consumer(broker)
    try:
        with pytest.raises(KafkaException) as e:
            c.get_watermark_offsets(TopicPartition(topic, 7), timeout=5, cached=False)
        assert e.value.args[0].code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_PARTITION)
    finally:
        c.close()


def test_consume_out_of_range_offset_resets(broker):
    topic = ck.create_topic(broker, unique("oor"))
    assert ck.produce_all(ck.producer(broker), topic, records(5), partition=0).failed == []
    # OFFSET_OUT_OF_RANGE from the broker makes librdkafka apply auto.offset.reset.
    msgs = ck.consume(broker, topic, start=1000, auto_offset_reset="earliest", count=5, until_eof=False)
    assert [m.offset() for m in msgs] == [0, 1, 2, 3, 4]


# ---------------------------------------------------------------- long poll


def _fetch_requests(stats_holder):
    s = stats_holder[-1]
    return sum(b.get("req", {}).get("Fetch", 0) for b in s["brokers"].values() if b.get("nodeid", -1) >= 0)


@pytest.mark.timeout_s(60)
def test_long_poll_wakes_on_produce(broker):
    topic = ck.create_topic(broker, unique("lp"))
    # A broker that does not wake waiting fetches would answer after 5 s.
    c = ck.consumer(broker, fetch_wait_max_ms=5000)
    p = ck.producer(broker, linger_ms=0)
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        # Let the consumer reach the (empty) end of the partition and park a fetch.
        end = time.monotonic() + 10
        while time.monotonic() < end:
            m = c.poll(0.2)
            if m is not None and m.error() and m.error().code() == KafkaError._PARTITION_EOF:
                break
        else:
            pytest.fail("consumer never reached the end of the empty partition")
        latencies = []
        for i in range(5):
            time.sleep(0.7)  # the fetch is parked at the broker
            t0 = time.monotonic()
            p.produce(topic, value=f"wake{i}".encode(), partition=0)
            p.poll(0)
            got = None
            while time.monotonic() - t0 < 8:
                m = c.poll(0.05)
                if m is not None and not m.error():
                    got = m
                    break
            assert got is not None and got.value() == f"wake{i}".encode(), f"record {i} not received in 8 s"
            latencies.append(time.monotonic() - t0)
        p.flush(10)
        latencies.sort()
        assert latencies[2] < 0.5, f"median produce->consume latency {latencies[2]:.3f}s (all: {latencies})"
        assert latencies[-1] < 1.5, f"worst produce->consume latency {latencies[-1]:.3f}s"
    finally:
        c.close()


@pytest.mark.timeout_s(60)
def test_empty_fetch_waits_for_max_wait(broker):
    topic = ck.create_topic(broker, unique("idle"))
    stats = []
    c = ck.consumer(broker, fetch_wait_max_ms=500, statistics_interval_ms=1000,
                    conf={"stats_cb": lambda s: stats.append(json.loads(s))})
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        end = time.monotonic() + 3
        while time.monotonic() < end:
            c.poll(0.1)
        while len(stats) < 1:
            c.poll(0.1)
        n0, t0 = _fetch_requests(stats), time.monotonic()
        end = t0 + 4
        while time.monotonic() < end:
            c.poll(0.1)
        n_stats = len(stats)
        while len(stats) == n_stats:
            c.poll(0.1)
        n1, t1 = _fetch_requests(stats), time.monotonic()
        rate = (n1 - n0) / (t1 - t0)
        # fetch.wait.max.ms=500 -> about 2 fetches a second; a broker that answers an
        # empty fetch at once makes the client spin at hundreds a second.
        assert rate <= 4.0, f"{rate:.1f} fetch requests/s on an idle partition (expected ~2)"
        assert rate >= 0.5, f"only {rate:.2f} fetch requests/s: fetches are held far longer than max.wait"
    finally:
        c.close()


def test_fetch_max_bytes_limits_but_always_progresses(broker):
    topic = ck.create_topic(broker, unique("fmax"))
    p = ck.producer(broker, linger_ms=20)
    values = [bytes([i % 256]) * 10_000 for i in range(200)]  # ~2 MB
    assert ck.produce_all(p, topic, [{"value": v} for v in values], partition=0).failed == []
    # Every record is bigger than the limits: the broker must still return the first
    # batch of each fetch (KIP-74), or the consumer would never advance.
    msgs = ck.consume(broker, topic, max_partition_fetch_bytes=1024, fetch_max_bytes=1100,
                      message_max_bytes=1000, timeout=30)
    assert [m.value() for m in msgs] == values


def test_many_partitions_concurrent_producers(broker):
    topic = ck.create_topic(broker, unique("conc"), partitions=8)
    results = []

    def work(n):
        p = ck.producer(broker, linger_ms=1)
        results.append(ck.produce_all(p, topic, [{"key": f"{n}-{i}".encode(), "value": f"{n}:{i}".encode()}
                                                 for i in range(500)]))
    ts = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(40)
    assert len(results) == 4
    assert all(d.failed == [] for d in results)
    acked = {}
    for d in results:
        for part, off, _, v in d.ok:
            assert (part, off) not in acked, f"two records acknowledged at {part}/{off}"
            acked[(part, off)] = v
    assert len(acked) == 2000
    for part in range(8):
        msgs = ck.consume(broker, topic, part)
        assert {(part, m.offset()): m.value() for m in msgs} == {k: v for k, v in acked.items() if k[0] == part}
