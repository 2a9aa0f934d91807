"""Storage seen through a client: segment rolls, retention and the log start offset,
timestamp types, topic configs, and recovery from a damaged segment tail."""

import glob
import os
import time

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import NewTopic

import ck
from harness import unique

MIB = 1024 * 1024


def segment_files(b, topic, partition=0):
    dirs = [d for d in glob.glob(os.path.join(b.data_dir, "**", f"{topic}-{partition}"), recursive=True)
            if os.path.isdir(d)]
    assert len(dirs) == 1, f"expected one directory {topic}-{partition} under {b.data_dir}, found {dirs}"
    return sorted(glob.glob(os.path.join(dirs[0], "*.log")))


def fill(b, topic, n, size=1000, partition=0, **conf):
    p = ck.producer(b, linger_ms=5, **conf)
    d = ck.produce_all(p, topic, [{"value": f"{i:08d}".encode() + b"." * size} for i in range(n)],
                       partition=partition)
    assert d.failed == []
    return d


@pytest.mark.timeout_s(90)
def test_segments_roll_and_reads_cross_them(start_broker):
    b = start_broker(log__segment__bytes=MIB)
    topic = ck.create_topic(b, unique("roll"))
    fill(b, topic, 4000)  # ~4 MB -> several 1 MiB segments
    segs = segment_files(b, topic)
    assert len(segs) >= 3, f"no segment roll at log.segment.bytes=1MiB: {segs}"
    names = [os.path.basename(s) for s in segs]
    assert names[0] == "00000000000000000000.log", names
    for start in (0, 999, 1000, 2500, 3999):
        got = ck.consume(b, topic, start=start, count=1, until_eof=False)
        assert got[0].offset() == start and got[0].value().startswith(f"{start:08d}".encode())
    msgs = ck.consume(b, topic, timeout=60)
    assert [m.offset() for m in msgs] == list(range(4000))
    assert b.terminate() == 0
    b.start()
    assert [m.offset() for m in ck.consume(b, topic, start=3000, timeout=60)] == list(range(3000, 4000))


@pytest.mark.timeout_s(120)
def test_retention_bytes_advances_log_start_offset(start_broker):
    b = start_broker(log__segment__bytes=MIB, log__retention__bytes=2 * MIB,
                     log__retention__check__interval__ms=300)
    topic = ck.create_topic(b, unique("ret"))
    fill(b, topic, 6000)  # ~6 MB
    deadline = time.monotonic() + 30
    lo, hi = ck.watermarks(b, topic)
    while lo == 0 and time.monotonic() < deadline:
        time.sleep(0.3)
        lo, hi = ck.watermarks(b, topic)
    assert hi == 6000
    assert lo > 0, "retention by bytes never removed a segment"
    assert hi - lo >= 2000, f"retention removed too much: log start {lo}, end {hi}"
    msgs = ck.consume(b, topic, start=lo, timeout=60)
    assert [m.offset() for m in msgs] == list(range(lo, hi))
    # Asking for a removed offset: OFFSET_OUT_OF_RANGE, so the client resets to the start.
    got = ck.consume(b, topic, start=0, count=1, until_eof=False, auto_offset_reset="earliest")
    assert got[0].offset() == lo
    assert b.terminate() == 0
    b.start()
    assert ck.watermarks(b, topic) == (lo, hi), "log start offset not kept across restart"


def test_log_append_time(start_broker):
    b = start_broker(log__message__timestamp__type="LogAppendTime")
    topic = ck.create_topic(b, unique("lat"))
    before = int(time.time() * 1000)
    d = ck.produce_all(ck.producer(b), topic, [{"value": b"old", "timestamp": 1_000_000_000_000}], partition=0)
    assert d.failed == []
    after = int(time.time() * 1000)
    m = ck.consume(b, topic)[0]
    ts_type, ts = m.timestamp()
    assert ts_type == 2, "LogAppendTime expected"  # TIMESTAMP_LOG_APPEND_TIME
    assert before - 1000 <= ts <= after + 1000


def test_topic_configs_at_create(broker):
    a = ck.admin(broker)
    name = unique("tcfg")
    fs = a.create_topics([NewTopic(name, 1, 1, config={"max.message.bytes": "2000",
                                                       "message.timestamp.type": "LogAppendTime"})])
    fs[name].result(15)
    ck.wait_for_topic(a, name, 1)
    p = ck.producer(broker, linger_ms=0, message_send_max_retries=0)
    d = ck.produce_all(p, name, [{"value": b"x" * 100, "timestamp": 1000}], partition=0)
    assert d.failed == []
    d = ck.produce_all(p, name, [{"value": b"x" * 3000}], partition=0)
    assert [e.code() for (e, _, _) in d.failed] == [KafkaError.MSG_SIZE_TOO_LARGE], "topic max.message.bytes ignored"
    msgs = ck.consume(broker, name)
    assert len(msgs) == 1 and msgs[0].timestamp()[0] == 2


def test_invalid_topic_config_refused(broker):
    a = ck.admin(broker)
    for cfg in ({"retention.ms": "not-a-number"}, {"no.such.config": "1"}):
        name = unique("badcfg")
        fs = a.create_topics([NewTopic(name, 1, 1, config=cfg)])
        with pytest.raises(KafkaException) as e:
            fs[name].result(15)
        assert e.value.args[0].code() == KafkaError.INVALID_CONFIG, (cfg, e.value.args[0])
        assert name not in a.list_topics(timeout=10).topics


@pytest.mark.timeout_s(120)
@pytest.mark.parametrize("damage", ["garbage-appended", "torn-last-batch", "flipped-byte-in-last-batch"])
def test_recovery_from_a_damaged_tail(start_broker, damage):
    b = start_broker()
    topic = ck.create_topic(b, unique("torn"))
    p = ck.producer(b, linger_ms=0)
    values = [f"record {i} ".encode() * 20 for i in range(20)]
    for v in values:  # 20 batches of one record each (~200 bytes)
        d = ck.produce_all(p, topic, [{"value": v}], partition=0)
        assert d.failed == []
    b.kill9()  # a crash: the broker must check the tail of the active segment on start
    seg = segment_files(b, topic)[-1]
    size = os.path.getsize(seg)
    with open(seg, "r+b") as f:
        if damage == "garbage-appended":
            f.seek(0, 2)
            f.write(os.urandom(300))
            keep = 20
        elif damage == "torn-last-batch":
            f.truncate(size - 7)
            keep = 19
        else:
            f.seek(size - 20)
            byte = f.read(1)
            f.seek(size - 20)
            f.write(bytes([byte[0] ^ 0xFF]))  # inside the last record's value: CRC mismatch
            keep = 19
    b.start()
    assert ck.watermarks(b, topic) == (0, keep), f"after {damage}"
    msgs = ck.consume(b, topic)
    assert [m.value() for m in msgs] == values[:keep]
    # New records continue right after what was kept (reading them back after a
    # restart: test_durability.py::test_append_after_restart).
    d = ck.produce_all(ck.producer(b), topic, [{"value": b"new"}], partition=0)
    assert d.ok[0][1] == keep


def partition_dirs(b, topic):
    return sorted(d for d in glob.glob(os.path.join(b.data_dir, "**", f"{topic}-*"), recursive=True)
                  if os.path.isdir(d))


@pytest.mark.timeout_s(90)
def test_a_partition_gets_its_directory_on_its_first_write(start_broker):
    """Creating a topic makes no partition directory (ext4 spent most of a 1,000-partition
    creation zeroing new directories); a never-written partition still exists for every
    client, across a restart, and can be deleted; the first write makes its directory."""
    b = start_broker()
    topic = ck.create_topic(b, unique("lazy"), partitions=8)
    assert partition_dirs(b, topic) == []
    assert ck.watermarks(b, topic, partition=3) == (0, 0)
    c = ck.consumer(b)
    try:
        got = c.offsets_for_times([TopicPartition(topic, 5, 0)], timeout=10)
        assert got[0].error is None and got[0].offset == -1, got
    finally:
        c.close()
    assert ck.consume(b, topic, partition=2) == []
    d = ck.produce_all(ck.producer(b), topic, [{"value": b"first"}], partition=6)
    assert d.failed == []
    assert [os.path.basename(p) for p in partition_dirs(b, topic)] == [f"{topic}-6"]
    assert b.terminate() == 0
    b.start()
    md = ck.admin(b).list_topics(topic, timeout=10).topics[topic]
    assert sorted(md.partitions) == list(range(8)) and all(p.error is None for p in md.partitions.values())
    assert [m.value() for m in ck.consume(b, topic, partition=6)] == [b"first"]
    assert ck.watermarks(b, topic, partition=1) == (0, 0)
    d = ck.produce_all(ck.producer(b), topic, [{"value": b"after-restart"}], partition=1)
    assert d.failed == []
    assert [m.value() for m in ck.consume(b, topic, partition=1)] == [b"after-restart"]
    # Deleting a topic whose partitions were mostly never written.
    a = ck.admin(b)
    a.delete_topics([topic], operation_timeout=10)[topic].result(15)
    deadline = time.monotonic() + 10
    while partition_dirs(b, topic) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert partition_dirs(b, topic) == []
    assert topic not in a.list_topics(timeout=10).topics
