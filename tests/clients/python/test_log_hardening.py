"""Issue 12, log layer, through the raw wire and real clients: a compression bomb on a
compacted topic is refused with the broker's memory bounded, a garbage zstd payload is
refused, a batch sent with maxTimestamp -1 (old sarama) gets its max timestamp
recomputed (ListOffsets by time finds it, time retention deletes it), offsets_for_times
is exact inside a gzip batch, and a second broker on the same log.dirs refuses to start.
"""

import gzip
import os
import re
import struct
import time

import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import NewTopic

import ck
import kwire
from harness import Broker, unique

# ---------------------------------------------------------------- batches


def batch(records, base_ts, max_ts=None, codec=0, payload=None):
    """A v2 batch of (key, value, timestamp delta) records. codec 1 = gzip (stdlib);
    `payload` replaces the records section as is (with `codec` in the attributes)."""
    recs = b"".join(kwire.record(k, v, offset_delta=i, timestamp_delta=d)
                    for i, (k, v, d) in enumerate(records))
    if payload is None:
        payload = gzip.compress(recs) if codec == 1 else recs
    if max_ts is None:
        max_ts = base_ts + max(d for _, _, d in records)
    after_crc = struct.pack(">hiqqqhii", codec, len(records) - 1, base_ts, max_ts,
                            -1, -1, -1, len(records)) + payload
    after_length = struct.pack(">ibI", -1, 2, kwire.crc32c(after_crc)) + after_crc
    return struct.pack(">qi", 0, len(after_length)) + after_length


def zstd_frame(prefix: bytes, zeros: int) -> bytes:
    """A zstd frame, written by hand (no zstd module here): one raw block holding
    `prefix`, then RLE blocks of zero bytes, `zeros` in all. Each 128 KiB RLE block is
    4 bytes, so a few hundred KiB inflate to gigabytes."""
    out = bytearray(b"\x28\xb5\x2f\xfd")  # magic
    out += bytes([0x00, 0x38])  # no content size, no checksum; window 2^17
    out += ((len(prefix) << 3) | (0 << 1) | 0).to_bytes(3, "little") + prefix  # raw block
    block = 128 * 1024
    n = zeros // block
    for i in range(n):
        last = 1 if i == n - 1 else 0
        out += ((block << 3) | (1 << 1) | last).to_bytes(3, "little") + b"\x00"
    return bytes(out)


def create(b, name, **configs):
    a = ck.admin(b)
    cfg = {k.replace("_", "."): str(v) for k, v in configs.items()}
    a.create_topics([NewTopic(name, num_partitions=1, replication_factor=1, config=cfg)],
                    operation_timeout=15, request_timeout=15)[name].result(15)
    ck.wait_for_topic(a, name, 1)
    return name


def vm_hwm_kib(b):
    with open(f"/proc/{b.proc.pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM")


# ---------------------------------------------------------------- tests


@pytest.mark.timeout_s(120)
def test_a_zstd_bomb_on_a_compacted_topic_is_refused_with_memory_bounded(start_broker):
    b = start_broker()
    topic = create(b, unique("bomb"), cleanup_policy="compact")
    # One keyed record declaring a 2 GiB value, then 8 GiB of zeros: ~256 KiB on the wire.
    prefix = kwire.varint(2**31 - 1) + b"\x00" + kwire.varint(0) + kwire.varint(0) \
        + kwire.varint(1) + b"k" + kwire.varint(2**31 - 100)
    payload = zstd_frame(prefix, 8 * 1024**3)
    assert len(payload) < 1024 * 1024
    bomb = batch([(b"k", b"v", 0)], int(time.time() * 1000), codec=4, payload=payload)
    before = vm_hwm_kib(b)
    with kwire.Conn(*b.address) as c:
        for _ in range(3):
            started = time.monotonic()
            err, _ = c.produce(topic, 0, bomb, acks=1)
            assert err == kwire.MESSAGE_TOO_LARGE, err
            assert time.monotonic() - started < 20
        # A garbage zstd payload is CORRUPT_MESSAGE, not stored.
        garbage = batch([(b"k", b"v", 0)], int(time.time() * 1000), codec=4,
                        payload=b"\x28\xb5\x2f\xfd" + b"\xff" * 64)  # reserved header bit set
        err, _ = c.produce(topic, 0, garbage, acks=1)
        assert err == kwire.CORRUPT_MESSAGE, err
        # The broker still serves.
        err, base = c.produce(topic, 0, batch([(b"k", b"fine", 0)], int(time.time() * 1000)), acks=1)
        assert (err, base) == (0, 0)
    peak = vm_hwm_kib(b)
    print(f"broker VmHWM before the bombs {before} KiB, after {peak} KiB")
    assert peak < 300 * 1024, f"peak RSS {peak} KiB"
    assert ck.watermarks(b, topic) == (0, 1)
    assert [m.value() for m in ck.consume(b, topic)] == [b"fine"]


@pytest.mark.timeout_s(120)
def test_a_batch_sent_with_max_timestamp_minus_one_is_found_by_time_and_expires(start_broker):
    b = start_broker({"log.retention.check.interval.ms": 300})
    topic = create(b, unique("sarama"), retention_ms=3000)
    base = int(time.time() * 1000)
    # Old sarama: the records carry timestamps, the batch says maxTimestamp -1.
    sent = batch([(None, f"v{i}".encode(), i * 10) for i in range(50)], base, max_ts=-1)
    with kwire.Conn(*b.address) as c:
        err, first = c.produce(topic, 0, sent, acks=1)
    assert (err, first) == (0, 0)
    c = ck.consumer(b)
    try:
        got = c.offsets_for_times([TopicPartition(topic, 0, base + 205)], timeout=10)
        assert got[0].offset == 21, got
    finally:
        c.close()
    deadline = time.monotonic() + 30
    while ck.watermarks(b, topic) != (50, 50):
        assert time.monotonic() < deadline, f"retention.ms=3000 kept {ck.watermarks(b, topic)}"
        time.sleep(0.3)


@pytest.mark.timeout_s(90)
def test_offsets_for_times_is_exact_inside_a_gzip_batch(start_broker):
    b = start_broker()
    topic = ck.create_topic(b, unique("gz"))
    base = int(time.time() * 1000) - 60_000
    sent = batch([(None, f"v{i}".encode(), i * 1000) for i in range(10)], base, codec=1)
    with kwire.Conn(*b.address) as c:
        assert c.produce(topic, 0, sent, acks=1) == (0, 0)
    c = ck.consumer(b)
    try:
        for i in range(10):
            got = c.offsets_for_times([TopicPartition(topic, 0, base + i * 1000 - 1)], timeout=10)
            assert got[0].offset == i, (i, got)
    finally:
        c.close()
    assert [m.value() for m in ck.consume(b, topic)] == [f"v{i}".encode() for i in range(10)]


@pytest.mark.timeout_s(90)
def test_a_second_broker_on_the_same_log_dirs_refuses_to_start(start_broker, tmp_path):
    first = start_broker()
    topic = ck.create_topic(first, unique("lock"))
    second = Broker(tmp_path / "second", name="second")
    second.data_dir = first.data_dir
    second.launch()
    try:
        code = second.proc.wait(30)
    finally:
        second.kill9()
    second.expected_exit = True
    log = open(second.log_path, errors="replace").read()
    assert code != 0, log
    assert "is in use by another process" in log and first.data_dir in log, log
    assert f"pid {first.proc.pid}" in log, log
    # The first broker is untouched and still serves.
    d = ck.produce_all(ck.producer(first), topic, [{"value": b"x"}], partition=0)
    assert d.failed == []


@pytest.mark.timeout_s(60)
def test_keyless_records_on_a_compacted_topic_get_kip_467_record_errors(start_broker):
    b = start_broker()
    topic = create(b, unique("keys"), cleanup_policy="compact")
    now = int(time.time() * 1000)
    mixed = batch([(b"k0", b"v", 0), (None, b"v", 0), (b"k2", b"v", 0), (None, b"v", 0)], now, codec=1)
    with kwire.Conn(*b.address) as c:
        err, _ = c.produce(topic, 0, mixed, acks=1, version=8)
        assert err == kwire.INVALID_RECORD, err
        assert [i for i, _ in c.last_record_errors] == [1, 3], c.last_record_errors
        assert all("without key" in m for _, m in c.last_record_errors)
        assert "without key" in c.last_error_message
        # Before v8 the response has no place for them: the same code, nothing else.
        assert c.produce(topic, 0, mixed, acks=1, version=7)[0] == kwire.INVALID_RECORD
    assert ck.watermarks(b, topic) == (0, 0)


# ---------------------------------------------------------------- recovery and replay


def partition_dir(b, topic, partition=0):
    d = os.path.join(b.data_dir, f"{topic}-{partition}")
    assert os.path.isdir(d), d
    return d


def segments(d):
    return sorted(os.path.join(d, f) for f in os.listdir(d) if f.endswith(".log") and f[:-4].isdigit())


def batch_offsets(path):
    """[(file position, base offset, last offset)] of every batch in a segment file."""
    raw = open(path, "rb").read()
    out, at = [], 0
    while at + 61 <= len(raw):
        base, length = struct.unpack_from(">qi", raw, at)
        (delta,) = struct.unpack_from(">i", raw, at + 23)
        out.append((at, base, base + delta))
        at += 12 + length
    return out


def plain_log(b):
    """The broker's log of its current run, without terminal colours."""
    return re.sub(r"\x1b\[[0-9;]*m", "", open(b.log_path, errors="replace").read())


def flip(path, at, mask):
    with open(path, "r+b") as f:
        f.seek(at)
        byte = f.read(1)[0]
        f.seek(at)
        f.write(bytes([byte ^ mask]))


@pytest.mark.timeout_s(120)
@pytest.mark.parametrize("damage", ["batch-length", "magic", "base-offset", "missing-segment"])
def test_damage_in_an_older_segment_takes_one_partition_offline_and_loses_nothing(start_broker, damage):
    b = start_broker()
    topic = create(b, unique("older"), segment_bytes=4096)
    other = ck.create_topic(b, unique("other"))
    p = ck.producer(b, linger_ms=0)
    values = [f"record {i:04d} ".encode() * 4 for i in range(400)]
    for i in range(0, len(values), 10):
        d = ck.produce_all(p, topic, [{"value": v} for v in values[i:i + 10]], partition=0)
        assert d.failed == []
    assert b.terminate() == 0
    segs = segments(partition_dir(b, topic))
    assert len(segs) >= 4, segs
    victim = segs[1]
    pos, _, _ = batch_offsets(victim)[-1]
    aside = victim + ".aside"
    if damage == "batch-length":
        undo = lambda: flip(victim, pos + 11, 0x10)  # noqa: E731
    elif damage == "magic":
        undo = lambda: flip(victim, pos + 16, 0x01)  # noqa: E731
    elif damage == "base-offset":
        undo = lambda: flip(victim, pos + 7, 0x40)  # noqa: E731
    else:
        undo = lambda: os.rename(aside, victim) if os.path.exists(aside) else os.rename(victim, aside)  # noqa: E731
    undo()  # apply the damage (each undo is its own inverse)
    before = {s: open(s, "rb").read() for s in segments(partition_dir(b, topic))}
    b.start()
    with kwire.Conn(*b.address) as c:
        err, _ = c.produce(topic, 0, kwire.record_batch([(None, b"x")]), acks=1)
        assert err == 56, err  # KAFKA_STORAGE_ERROR
        err, _ = c.produce(other, 0, kwire.record_batch([(None, b"x")]), acks=1)
        assert err == 0, err
    log = plain_log(b)
    assert "partition offline" in log, b.log_tail()
    # The error names the damaged file, or for a missing one the segment after the gap.
    named = os.path.basename(segs[2] if damage == "missing-segment" else victim)
    assert named in log, b.log_tail()
    assert ("leaves a gap" if damage == "missing-segment" else "is damaged at byte") in log, b.log_tail()
    assert {s: open(s, "rb").read() for s in segments(partition_dir(b, topic))} == before, "recovery changed a file"
    # Repaired, every acknowledged record is back.
    assert b.terminate() == 0
    undo()
    b.start()
    assert ck.watermarks(b, topic) == (0, len(values))
    assert [m.value() for m in ck.consume(b, topic)] == values


def offsets_partition(group, partitions=50):
    """Kafka's Utils.abs(group.hashCode()) % partitions (UTF-16 units; ASCII here)."""
    h = 0
    for ch in group:
        h = (31 * h + ord(ch)) & 0xFFFFFFFF
    h = h - (1 << 32) if h >= 1 << 31 else h
    return (0 if h == -(1 << 31) else abs(h)) % partitions


def offset_fetch(b, group):
    """OffsetFetch v3 for every offset of `group`: (top-level error code, {(topic, partition): offset})."""
    offsets = {}
    with kwire.Conn(*b.address) as c:
        r = c.request(9, 3, kwire.string(group) + struct.pack(">i", -1))
        r.int32()  # throttle
        for _ in range(r.int32()):
            name = r.string()
            for _ in range(r.int32()):
                part, off = r.int32(), r.int64()
                r.string(), r.int16()
                offsets[(name, part)] = off
        return r.int16(), offsets



def broker_with_a_committed_offset(start_broker, prefix, offset):
    """A broker, a topic, and a group that committed `offset` on its partition 0."""
    from confluent_kafka import ConsumerGroupTopicPartitions
    b = start_broker()
    topic = ck.create_topic(b, unique(prefix))
    group = unique("g")
    a = ck.admin(b)
    a.alter_consumer_group_offsets(
        [ConsumerGroupTopicPartitions(group, [TopicPartition(topic, 0, offset)])])[group].result(15)
    return b, topic, group


@pytest.mark.timeout_s(120)
def test_replay_reads_compressed_batches_and_skips_unreadable_ones(start_broker):
    b, topic, group = broker_with_a_committed_offset(start_broker, "replay", 7)
    assert offset_fetch(b, group) == (0, {(topic, 0): 7})
    assert b.terminate() == 0
    # What a past version or a client could have left in __consumer_offsets: a gzip batch
    # of records the coordinator does not know, and a gzip batch that does not inflate.
    d = max((os.path.join(b.data_dir, n) for n in os.listdir(b.data_dir) if n.startswith("__consumer_offsets-")),
            key=lambda d: sum(os.path.getsize(s) for s in segments(d)))
    seg = segments(d)[-1]
    last = batch_offsets(seg)[-1][2]
    now = int(time.time() * 1000)
    readable = bytearray(batch([(b"\x00\x09junk", b"junk", 0)], now, codec=1))
    unreadable = bytearray(batch([(b"k", b"v", 0)], now, codec=1, payload=b"\x1f\x8b" + b"\x00" * 30))
    struct.pack_into(">q", readable, 0, last + 1)
    struct.pack_into(">q", unreadable, 0, last + 2)
    with open(seg, "ab") as f:
        f.write(readable + unreadable)
    b.start()
    assert offset_fetch(b, group) == (0, {(topic, 0): 7})
    log = plain_log(b)
    assert "replay skipped records it cannot read" in log and f"offset={last + 2}" in log, b.log_tail()


@pytest.mark.timeout_s(120)
def test_groups_on_an_offline_offsets_partition_answer_coordinator_not_available(start_broker):
    b, topic, group = broker_with_a_committed_offset(start_broker, "coord", 3)
    other = next(g for g in (f"other-{i}" for i in range(1000))
                 if offsets_partition(g) != offsets_partition(group))
    assert b.terminate() == 0
    seg = segments(os.path.join(b.data_dir, f"__consumer_offsets-{offsets_partition(group)}"))[0]
    assert os.path.getsize(seg) > 0
    flip(seg, 16, 0x01)  # magic of the first batch, below the recovery point
    b.start()
    assert offset_fetch(b, group) == (15, {})  # COORDINATOR_NOT_AVAILABLE, not "no offsets"
    assert offset_fetch(b, other) == (0, {})
    assert b.terminate() == 0
    flip(seg, 16, 0x01)
    b.start()
    assert offset_fetch(b, group) == (0, {(topic, 0): 3})
