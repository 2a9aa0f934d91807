"""Log compaction seen through confluent-kafka: the cleaner keeps exactly the latest
record per key (compared with a model the test computes from the producer's delivery
reports, offsets included), removes tombstones after delete.retention.ms, refuses keyless
records, and loses nothing when the broker is killed while it cleans.

The broker runs the cleaner every 200 ms (log.cleaner.backoff.ms); topics use tiny
segments and min.cleanable.dirty.ratio=0.01 so that cleaning starts at once. The active
segment is never cleaned, so each test writes "filler" records with fresh keys after the
records it checks, which rolls those records into cleanable segments.
"""

import os
import random
import time

import pytest
from confluent_kafka import KafkaError
from confluent_kafka.admin import NewTopic

import ck
from harness import unique

CLEANER = {"log.cleaner.backoff.ms": 200}


def create_compacted(broker, name, partitions=1, **configs):
    cfg = {"cleanup.policy": "compact", "segment.bytes": "2048", "min.cleanable.dirty.ratio": "0.01"}
    cfg.update({k.replace("_", "."): str(v) for k, v in configs.items()})
    a = ck.admin(broker)
    a.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1, config=cfg)],
                    operation_timeout=15, request_timeout=15)[name].result(15)
    ck.wait_for_topic(a, name, partitions)
    return name


def write(broker, topic, records, chunk=40, **conf):
    """records: [(key bytes, value bytes or None)], written to partition 0 in small
    batches. Returns the delivery reports [(offset, key, value)] in offset order."""
    p = ck.producer(broker, linger_ms=0, **conf)
    out = []
    for i in range(0, len(records), chunk):
        d = ck.produce_all(p, topic, [{"key": k, "value": v} for k, v in records[i:i + chunk]], partition=0)
        assert d.failed == [], d.failed[:3]
        out.extend((o, k, v) for _, o, k, v in d.ok)
    return sorted(out)


def model(delivered):
    """key -> (offset, value) of the latest record per key."""
    m = {}
    for off, k, v in delivered:
        m[k] = (off, v)
    return m


def read_all(broker, topic):
    return [(m.offset(), m.key(), m.value()) for m in ck.consume(broker, topic, 0, timeout=30)]


def filler(n, tag):
    """Records with fresh keys; random values, so they fill segments even compressed."""
    return [(f"filler-{tag}-{i}".encode(), os.urandom(24)) for i in range(n)]


def compacted_exactly(log, expect):
    """True when `log` holds exactly one record per key of `expect` (key -> (offset,
    value)), at that offset with that value; records of other keys are ignored."""
    got = [(o, k, v) for o, k, v in log if k in expect]
    return sorted(got) == sorted((o, k, v) for k, (o, v) in expect.items())


def wait_compacted(broker, topic, expect, timeout=30, also=None, nudge=None):
    """Reads the partition until it is compacted as `expect` says (and `also(log)`)."""
    deadline = time.monotonic() + timeout
    n = 0
    while True:
        log = read_all(broker, topic)
        if compacted_exactly(log, expect) and (also is None or also(log)):
            return log
        if time.monotonic() > deadline:
            keys = {}
            for o, k, v in log:
                if k in expect:
                    keys.setdefault(k, []).append(o)
            dup = {k: v for k, v in keys.items() if len(v) > 1}
            missing = [k for k in expect if k not in keys]
            wrong = [(k, keys[k], expect[k][0]) for k in keys if keys[k][-1] != expect[k][0]]
            raise AssertionError(
                f"{topic} not compacted as expected within {timeout}s: {len(log)} records, "
                f"{len(dup)} keys still duplicated (e.g. {list(dup.items())[:3]}), missing {missing[:5]}, "
                f"latest at the wrong offset {wrong[:5]}")
        if nudge:
            nudge(n)
            n += 1
        time.sleep(0.3)


def assert_latest_values_present(log, expect):
    """Nothing lost: for every key the last record in the log is the model's latest."""
    last = {}
    for o, k, v in log:
        last[k] = (o, v)
    bad = [(k, last.get(k), want) for k, want in expect.items() if last.get(k) != want]
    assert not bad, f"{len(bad)} keys lost their latest value, e.g. {bad[:5]}"
    offsets = [o for o, _, _ in log]
    assert offsets == sorted(set(offsets)), "offsets must stay increasing and unique"


@pytest.mark.timeout_s(90)
@pytest.mark.parametrize("compression", ["none", "zstd"])
def test_compaction_keeps_exactly_the_latest_value_per_key(start_broker, compression):
    b = start_broker(CLEANER)
    topic = create_compacted(b, unique("compact"))
    rnd = random.Random(7)
    records = [(f"key-{rnd.randrange(100)}".encode(), f"value-{i}".encode()) for i in range(3000)]
    delivered = write(b, topic, records, compression_type=compression)
    assert [o for o, _, _ in delivered] == list(range(3000))
    expect = model(delivered)
    write(b, topic, filler(200, "a"), compression_type=compression)
    log = wait_compacted(b, topic, expect)
    # Offsets are preserved (gaps are normal) and the end of the log does not move.
    assert ck.watermarks(b, topic)[1] == 3200
    assert len(log) < 3200
    assert_latest_values_present(log, expect)
    # More writes to the same keys: compacted again, still exactly the latest.
    more = write(b, topic, [(k, v + b"-again") for k, v in records[:500]], compression_type=compression)
    expect.update(model(more))
    write(b, topic, filler(200, "b"), compression_type=compression)
    wait_compacted(b, topic, expect)
    # And it all survives a restart.
    b.restart()
    log = read_all(b, topic)
    assert compacted_exactly(log, expect)


@pytest.mark.timeout_s(90)
def test_tombstones_removed_after_delete_retention(start_broker):
    b = start_broker(CLEANER)
    short = create_compacted(b, unique("tomb-short"), delete_retention_ms=1500)
    long = create_compacted(b, unique("tomb-long"), delete_retention_ms=3_600_000)
    keys = [f"k{i}".encode() for i in range(50)]
    deleted = set(keys[:20])
    for topic in (short, long):
        values = write(b, topic, [(k, f"{k.decode()}-v{j}".encode()) for j in range(5) for k in keys])
        tombs = write(b, topic, [(k, None) for k in sorted(deleted)])
        live = {k: ov for k, ov in model(values).items() if k not in deleted}
        m = model(values + tombs)
        write(b, topic, filler(150, "a"))
        if topic == long:
            # Within delete.retention.ms each deleted key keeps exactly its tombstone.
            log = wait_compacted(b, topic, m)
            assert all(v is None for o, k, v in log if k in deleted)
            assert len([1 for _, k, _ in log if k in deleted]) == 20
        else:
            # After delete.retention.ms the tombstones go too (the next cleaning after
            # it expires: keep the log dirty with a few more fillers).
            counter = iter(range(10_000))
            log = wait_compacted(
                b, topic, live, timeout=40,
                also=lambda log: not any(k in deleted for _, k, _ in log),
                nudge=lambda n: write(b, topic, filler(30, f"n{next(counter)}")))
            assert not any(k in deleted for _, k, _ in log)
    # The long-retention tombstones are still there after all that time.
    log = read_all(b, long)
    assert sorted(k for _, k, v in log if k in deleted and v is None) == sorted(deleted)


@pytest.mark.timeout_s(60)
@pytest.mark.parametrize("policy", ["compact", "compact,delete"])
def test_keyless_records_refused_on_compacted_topic(start_broker, policy):
    b = start_broker(CLEANER)
    topic = create_compacted(b, unique("nokey"), cleanup_policy=policy)
    p = ck.producer(b, linger_ms=0, retries=0)
    d = ck.produce_all(p, topic, [{"value": b"no key"}], partition=0)
    assert d.ok == [] and len(d.failed) == 1, (d.ok, d.failed)
    err = d.failed[0][0]
    # Kafka answers INVALID_RECORD (87) ("Compacted topic cannot accept message without key").
    assert err.code() == KafkaError.INVALID_RECORD, err
    assert ck.watermarks(b, topic) == (0, 0)
    # Keyed records are fine, and a batch mixing both is refused as a whole.
    d = ck.produce_all(p, topic, [{"key": b"k", "value": b"v"}], partition=0)
    assert d.failed == [] and len(d.ok) == 1
    assert ck.watermarks(b, topic) == (0, 1)


# What this checks is that nothing is lost; how soon the cleaner catches up depends on
# the machine's load, so the waits are generous.
@pytest.mark.timeout_s(260)
def test_kill9_during_compaction_loses_nothing(start_broker):
    b = start_broker(CLEANER)
    topic = create_compacted(b, unique("crash"), segment_bytes=16384)
    rnd = random.Random(11)
    records = [(f"key-{rnd.randrange(300)}".encode(), (f"value-{i}-".encode() + b"x" * 80)) for i in range(15000)]
    delivered = write(b, topic, records, chunk=200)
    expect = model(delivered)
    write(b, topic, filler(300, "a"), chunk=100)
    end = ck.watermarks(b, topic)[1]
    kills = 0
    for delay in (0.15, 0.4, 0.25, 0.7, 0.05, 1.0):
        time.sleep(delay)
        b.kill9()
        kills += 1
        b.start()
        log = read_all(b, topic)
        assert_latest_values_present(log, expect)
        assert ck.watermarks(b, topic)[1] == end, "the log end moved after a kill during cleaning"
    assert kills == 6
    log = wait_compacted(b, topic, expect, timeout=100)
    assert_latest_values_present(log, expect)
    assert len(log) < 2000
    # The restarted broker keeps appending where the log ends, and compacts that too.
    more = write(b, topic, [(k, v + b"-after") for k, v in records[:600]], chunk=200)
    assert more[0][0] == end
    expect.update(model(more))
    write(b, topic, filler(300, "b"), chunk=100)
    log = wait_compacted(b, topic, expect, timeout=100)
    assert_latest_values_present(log, expect)
