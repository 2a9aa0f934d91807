"""Restart and crash: what a broker acknowledged is there after SIGTERM and after
SIGKILL, at the offsets it reported, intact, with offsets dense from 0."""

import hashlib
import threading
import time

import pytest
from confluent_kafka import TopicPartition

import ck
import kwire
from harness import unique

def numbered(i, size=200):
    body = (f"{i:09d}|" + "x" * size).encode()
    return body + b"|" + hashlib.sha256(body).hexdigest()[:16].encode()


def check_intact(value):
    body, _, digest = value.rpartition(b"|")
    assert hashlib.sha256(body).hexdigest()[:16].encode() == digest, f"corrupt record value {value[:40]!r}"
    return int(body.split(b"|", 1)[0])


def read_partition(b, topic, part, timeout=60):
    lo, hi = ck.watermarks(b, topic, part)
    msgs = ck.consume(b, topic, part, start=0, timeout=timeout) if hi > 0 else []
    return lo, hi, msgs


class Load:
    """A confluent-kafka producer thread with acks=all sending numbered records as fast as it can."""

    def __init__(self, b, topic, start_at=0, **conf):
        self.p = ck.producer(b, acks="all", linger_ms=1, message_timeout_ms=5000,
                             queue_buffering_max_messages=20000, **conf)
        self.topic = topic
        self.next = start_at
        self.acked = {}  # (partition, offset) -> value
        self.twice = []  # (partition, offset) acknowledged for two different records
        self.failed = 0
        self.error = None  # an exception that stopped the producing thread
        self.stop = threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)

    def cb(self, err, msg):
        if err is None:
            key = (msg.partition(), msg.offset())
            if key in self.acked:
                self.twice.append(key)
            self.acked[key] = msg.value()
        else:
            self.failed += 1

    def run(self):
        try:
            while not self.stop.is_set():
                try:
                    self.p.produce(self.topic, value=numbered(self.next), key=str(self.next).encode(),
                                   on_delivery=self.cb)
                    self.next += 1
                except BufferError:
                    self.p.poll(0.01)
                self.p.poll(0)
        except BaseException as e:  # noqa: B036 - reported by finish()
            self.error = e

    def finish(self):
        self.stop.set()
        self.t.join(10)
        left = self.p.flush(30)
        assert self.error is None, f"producer thread failed: {self.error!r}"
        assert left == 0, f"{left} records neither acknowledged nor failed 30 s after the kill"
        assert not self.twice, f"offsets acknowledged twice for different records: {self.twice[:5]}"


def produce_then_kill(b, topic, start_at, min_acked, **conf):
    load = Load(b, topic, start_at=start_at, **conf)
    load.t.start()
    deadline = time.monotonic() + 60
    while len(load.acked) < min_acked and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(load.acked) >= min_acked, f"only {len(load.acked)} records acknowledged in 60 s"
    b.kill9()  # mid-stream: the producer is still sending
    # Keep producing into the dead broker for a moment, so records are in flight even when
    # a loaded machine let every earlier one be acknowledged just before the kill.
    time.sleep(0.5)
    load.finish()
    return load


@pytest.mark.timeout_s(240)
@pytest.mark.parametrize("flush,rounds", [
    ("default", 1),
    ("flush-every-message", 1),
    pytest.param("default", 2),  # crash, recover, produce on top, crash again
])
def test_kill9_during_produce_loses_no_acknowledged_record(start_broker, flush, rounds):
    configs = {"log.flush.interval.messages": "1"} if flush != "default" else {}
    b = start_broker(configs)
    topic = ck.create_topic(b, unique("crash"), partitions=2)
    acked = {}
    next_i = 0
    for round_ in range(rounds):
        load = produce_then_kill(b, topic, next_i, min_acked=3000)
        assert load.failed > 0 or len(load.acked) < load.next, "kill -9 came too late to be mid-stream"
        next_i = load.next
        for k, v in load.acked.items():
            assert k not in acked, f"offset {k} acknowledged in round {round_} was already acknowledged before"
            acked[k] = v
        b.start()  # same data dir, after SIGKILL
        for part in (0, 1):
            lo, hi, msgs = read_partition(b, topic, part)
            assert lo == 0
            offsets = [m.offset() for m in msgs]
            assert offsets == list(range(hi)), f"partition {part}: offsets not dense from 0 up to {hi}"
            for m in msgs:
                n = check_intact(m.value())
                assert m.key() == str(n).encode()
            stored = {(part, m.offset()): m.value() for m in msgs}
            mine = {k: v for k, v in acked.items() if k[0] == part}
            missing = [k for k in mine if k not in stored]
            assert not missing, (f"round {round_}: {len(missing)} acknowledged records missing from partition "
                                 f"{part} (high watermark {hi}), first {sorted(missing)[:5]}")
            wrong = [k for k, v in mine.items() if stored[k] != v]
            assert not wrong, f"round {round_}: records at {sorted(wrong)[:5]} differ from what was acknowledged"
    # The recovered log takes new records at the right offsets.
    his = [ck.watermarks(b, topic, part)[1] for part in (0, 1)]
    d = ck.produce_all(ck.producer(b), topic, [{"value": numbered(10**8)}], partition=0)
    assert [(pp, o) for (pp, o, _, _) in d.ok] == [(0, his[0])]


@pytest.mark.timeout_s(60)
@pytest.mark.parametrize("stop", ["sigterm", "sigkill"])
def test_append_after_restart(start_broker, stop):
    """The simplest restart: records written after a restart go after the old ones."""
    b = start_broker()
    topic = ck.create_topic(b, unique("reopen"))
    d = ck.produce_all(ck.producer(b), topic, [{"value": b"before %d" % i} for i in range(10)], partition=0)
    assert [o for (_, o, _, _) in d.ok] == list(range(10))
    if stop == "sigterm":
        assert b.terminate() == 0
    else:
        b.kill9()
    b.start()
    d = ck.produce_all(ck.producer(b), topic, [{"value": b"after %d" % i} for i in range(10)], partition=0)
    assert [o for (_, o, _, _) in d.ok] == list(range(10, 20))
    msgs = ck.consume(b, topic, timeout=8)
    assert [(m.offset(), m.value()) for m in msgs] == \
        [(i, b"before %d" % i) for i in range(10)] + [(10 + i, b"after %d" % i) for i in range(10)]
    assert b.terminate() == 0
    b.start()
    assert [m.value() for m in ck.consume(b, topic)] == [m.value() for m in msgs]


@pytest.mark.timeout_s(120)
def test_sigterm_restart_keeps_everything(start_broker):
    b = start_broker(log__segment__bytes=1048576)
    t1 = ck.create_topic(b, unique("persist"), partitions=3)
    t2 = ck.create_topic(b, unique("gone"))
    sent = {}
    for codec in ("none", "gzip", "zstd"):
        p = ck.producer(b, compression_type=codec, linger_ms=10)
        recs = [{"key": f"{codec}-{i}".encode(), "value": numbered(i, 1000),
                 "headers": [("codec", codec.encode()), ("null", None)],
                 "timestamp": 1_700_000_000_000 + i} for i in range(1500)]
        d = ck.produce_all(p, t1, recs)
        assert d.failed == []
        for part, off, k, v in d.ok:
            sent[(part, off)] = (k, v)
    ck.produce_all(ck.producer(b), t2, [{"value": b"bye"}])
    a = ck.admin(b)
    a.delete_topics([t2], operation_timeout=10)[t2].result(15)

    def snapshot():
        out = {}
        for part in range(3):
            for m in ck.consume(b, t1, part, timeout=60):
                out[(part, m.offset())] = (m.key(), m.value(), m.headers(), m.timestamp())
        return out

    before = snapshot()
    assert {k: (v[0], v[1]) for k, v in before.items()} == sent
    code = b.terminate()
    assert code == 0, f"broker exited {code} on SIGTERM\n{b.log_tail()}"
    b.start()
    md = ck.admin(b).list_topics(timeout=10)
    assert len(md.topics[t1].partitions) == 3, "partition count lost on restart"
    assert t2 not in md.topics, "a deleted topic came back after restart"
    after = snapshot()
    assert after == before
    # Reading from the middle after restart uses the rebuilt/reloaded indexes.
    c = ck.consumer(b)
    try:
        r = c.offsets_for_times([TopicPartition(t1, 0, 1_700_000_000_000 + 1400)], timeout=10)
        assert r[0].offset >= 0
        got = ck.consume(b, t1, 0, start=r[0].offset, count=1, until_eof=False)
        assert got[0].timestamp()[1] >= 1_700_000_000_000 + 1400
    finally:
        c.close()
    # New records continue the offsets.
    d = ck.produce_all(ck.producer(b), t1, [{"value": b"next"}], partition=1)
    hi1 = max(o for (p, o) in sent if p == 1) + 1
    assert d.ok[0][1] == hi1  # (reading it back after a restart: test_append_after_restart)


@pytest.mark.timeout_s(90)
def test_idempotent_producer_state_survives_restart(start_broker):
    """Raw wire: a duplicate of a batch written before a restart is still recognised
    after it, and a sequence gap is still refused."""
    b = start_broker()
    topic = ck.create_topic(b, unique("pidrestart"))
    with kwire.Conn(*b.address) as c:
        err, apis = c.api_versions_v0()
        assert err == 0
        pv = kwire.pick_version(apis, kwire.PRODUCE, 3, 8)
        iv = kwire.pick_version(apis, kwire.INIT_PRODUCER_ID, 0, 1)
        assert pv is not None and iv is not None, f"Produce v3-8 / InitProducerId v0-1 not advertised: {apis}"
        err, pid, epoch = c.init_producer_id(iv)
        assert err == 0 and pid >= 0 and epoch >= 0
        batches = [kwire.record_batch([(None, f"s{s}".encode())], producer_id=pid, producer_epoch=epoch,
                                      base_sequence=s) for s in range(3)]
        for s in range(3):
            assert c.produce(topic, 0, batches[s], version=pv) == (0, s)
    assert b.terminate() == 0
    b.start()
    assert [m.value() for m in ck.consume(b, topic)] == [b"s0", b"s1", b"s2"]
    with kwire.Conn(*b.address) as c:
        err, base = c.produce(topic, 0, batches[2], version=pv)
        assert err in (kwire.NONE, kwire.DUPLICATE_SEQUENCE_NUMBER), f"duplicate after restart answered {err}"
        if err == kwire.NONE:
            assert base == 2, f"duplicate after restart answered with base offset {base}, expected the original 2"
        gap = kwire.record_batch([(None, b"gap")], producer_id=pid, producer_epoch=epoch, base_sequence=7)
        assert c.produce(topic, 0, gap, version=pv)[0] == kwire.OUT_OF_ORDER_SEQUENCE_NUMBER
        nxt = kwire.record_batch([(None, b"s3")], producer_id=pid, producer_epoch=epoch, base_sequence=3)
        assert c.produce(topic, 0, nxt, version=pv) == (0, 3)
    # The duplicate was not stored again (reading back after a restart: test_append_after_restart).
    assert ck.watermarks(b, topic) == (0, 4)
