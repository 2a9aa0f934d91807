"""Transactions and exactly-once (issue 7) with real clients: confluent-kafka
(librdkafka) transactional producers and read_committed consumers, consume-transform-
produce with send_offsets_to_transaction and a crash, transactions across a broker
kill -9, kafka-python's transactional producer / read_committed consumer / transaction
admin APIs, and the history checker (txn_checker.py).

librdkafka's consumers default to isolation.level=read_committed; every read here says
which level it uses anyway.
"""

import json
import os
import subprocess
import sys
import threading
import time

import pytest
from confluent_kafka import IsolationLevel, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import OffsetSpec

import ck
import txn_checker
from harness import _die_with_parent, unique

RC = "read_committed"
RU = "read_uncommitted"
# The broker aborts timed-out transactions every 200 ms instead of every 10 s.
FAST_ABORT = {"transaction.abort.timed.out.transaction.cleanup.interval.ms": 200,
              "group.initial.rebalance.delay.ms": 0}


def txn_producer(b, txn_id=None, **kw):
    conf = {"transactional.id": txn_id or unique("txid")}
    conf.update({k.replace("_", "."): v for k, v in kw.items()})
    return ck.producer(b, conf)


def values(msgs):
    return [m.value() for m in msgs]


def read(b, topic, partition=0, isolation=RC, timeout=20):
    """Everything up to the end of the partition for this isolation level."""
    return ck.consume(b, topic, partition, start=0, timeout=timeout, isolation_level=isolation)


def fatal_error(excinfo):
    """The KafkaError of a fatal producer error. librdkafka raises it from flush(), out of
    a delivery callback, so Python may wrap it in a SystemError."""
    e = excinfo.value
    if isinstance(e, SystemError):
        e = e.__cause__
    assert isinstance(e, KafkaException), repr(excinfo.value)
    return e.args[0]


def send(p, topic, vals, partition=0):
    d = ck.Delivery()
    for v in vals:
        p.produce(topic, value=v, key=v, partition=partition, on_delivery=d)
    return d


def latest(b, tps, isolation):
    """ListOffsets latest via the AdminClient with an explicit isolation level."""
    level = IsolationLevel.READ_COMMITTED if isolation == RC else IsolationLevel.READ_UNCOMMITTED
    a = ck.admin(b)  # keep a reference until the futures complete
    fs = a.list_offsets({TopicPartition(t, p): OffsetSpec.latest() for t, p in tps},
                        isolation_level=level, request_timeout=10)
    return {(tp.topic, tp.partition): f.result(10).offset for tp, f in fs.items()}


def wait_until(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


def vals(prefix, n):
    return [f"{prefix}{i}".encode() for i in range(n)]


# ---------------------------------------------------------------- commit / abort


def test_commit_visible_to_read_committed(broker):
    topic = ck.create_topic(broker, unique("txc"))
    p = txn_producer(broker)
    p.init_transactions(20)
    p.begin_transaction()
    d = send(p, topic, vals("c", 10))
    assert p.flush(20) == 0 and d.failed == []
    # Before the commit: in the log, invisible to read_committed.
    assert values(read(broker, topic, isolation=RU)) == vals("c", 10)
    assert read(broker, topic, isolation=RC) == []
    p.commit_transaction(20)
    msgs = read(broker, topic, isolation=RC)
    assert values(msgs) == vals("c", 10)
    assert [m.offset() for m in msgs] == list(range(10))
    # The commit marker takes offset 10; both ends agree once nothing is open.
    assert ck.watermarks(broker, topic) == (0, 11)
    assert latest(broker, [(topic, 0)], RC) == latest(broker, [(topic, 0)], RU) == {(topic, 0): 11}
    # A second transaction appends after the marker.
    p.begin_transaction()
    send(p, topic, vals("d", 3))
    p.commit_transaction(20)
    assert values(read(broker, topic, isolation=RC)) == vals("c", 10) + vals("d", 3)


def test_abort_hidden_from_read_committed(broker):
    topic = ck.create_topic(broker, unique("txa"))
    p = txn_producer(broker)
    p.init_transactions(20)
    p.begin_transaction()
    d = send(p, topic, vals("a", 10))
    assert p.flush(20) == 0 and d.failed == [] and len(d.ok) == 10
    assert values(read(broker, topic, isolation=RU)) == vals("a", 10), "flushed records must be in the log"
    p.abort_transaction(20)
    assert read(broker, topic, isolation=RC) == []
    assert values(read(broker, topic, isolation=RU)) == vals("a", 10)
    # Then a committed one: read_committed sees exactly it, after the aborted range.
    p.begin_transaction()
    send(p, topic, vals("c", 5))
    p.commit_transaction(20)
    msgs = read(broker, topic, isolation=RC)
    assert values(msgs) == vals("c", 5)
    assert [m.offset() for m in msgs] == list(range(11, 16))  # 0-9 aborted, 10 abort marker
    assert values(read(broker, topic, isolation=RU)) == vals("a", 10) + vals("c", 5)
    # Seeking into the aborted range under read_committed still skips it.
    assert values(ck.consume(broker, topic, 0, start=4, isolation_level=RC)) == vals("c", 5)


def test_interleaved_transactions_and_plain_records(broker):
    """Two transactional producers and a plain one on one partition: read_committed
    returns the plain records and the committed transaction, in offset order, and never
    the aborted one, however the batches interleave."""
    topic = ck.create_topic(broker, unique("txi"))
    p1, p2 = txn_producer(broker), txn_producer(broker)
    plain = ck.producer(broker)
    p1.init_transactions(20)
    p2.init_transactions(20)
    p1.begin_transaction()
    p2.begin_transaction()
    for i in range(5):
        for p, pre in ((p1, "one"), (p2, "two"), (plain, "plain")):
            p.produce(topic, value=f"{pre}{i}".encode(), partition=0)
            p.flush(10)
    # While both are open, read_committed stops before the first open transaction.
    assert read(broker, topic, isolation=RC) == []
    p2.abort_transaction(20)
    assert read(broker, topic, isolation=RC) == [], "p1 is still open, from offset 0"
    p1.commit_transaction(20)
    got = values(read(broker, topic, isolation=RC))
    want = [f"{pre}{i}".encode() for i in range(5) for pre in ("one", "plain")]
    assert got == want


# ---------------------------------------------------------------- last stable offset


def test_list_offsets_latest_is_lso_while_a_transaction_is_open(broker):
    topic = ck.create_topic(broker, unique("txlso"))
    tp = [(topic, 0)]
    p = txn_producer(broker)
    p.init_transactions(20)
    p.begin_transaction()
    send(p, topic, vals("c", 5))
    p.commit_transaction(20)  # offsets 0-4, marker 5
    p.begin_transaction()
    send(p, topic, vals("o", 7))
    assert p.flush(20) == 0  # offsets 6-12, open
    assert latest(broker, tp, RU) == {(topic, 0): 13}
    assert latest(broker, tp, RC) == {(topic, 0): 6}, "latest under read_committed is the LSO"
    # librdkafka's own watermark query uses the consumer's isolation level.
    rc = ck.consumer(broker, isolation_level=RC)
    ru = ck.consumer(broker, isolation_level=RU)
    try:
        assert rc.get_watermark_offsets(TopicPartition(topic, 0), timeout=10, cached=False) == (0, 6)
        assert ru.get_watermark_offsets(TopicPartition(topic, 0), timeout=10, cached=False) == (0, 13)
    finally:
        rc.close()
        ru.close()
    # A read_committed consumer stops at the LSO: it gets the committed five, then EOF.
    assert values(read(broker, topic, isolation=RC)) == vals("c", 5)
    p.commit_transaction(20)
    assert latest(broker, tp, RC) == latest(broker, tp, RU) == {(topic, 0): 14}
    assert values(read(broker, topic, isolation=RC)) == vals("c", 5) + vals("o", 7)


# ---------------------------------------------------------------- several partitions and topics


def test_one_transaction_over_several_partitions_and_topics(broker):
    ta = ck.create_topic(broker, unique("txma"), partitions=3)
    tb = ck.create_topic(broker, unique("txmb"), partitions=2)
    tps = [(ta, i) for i in range(3)] + [(tb, i) for i in range(2)]
    p = txn_producer(broker)
    p.init_transactions(20)
    for n, (label, commit) in enumerate((("x", True), ("y", False), ("z", True))):
        p.begin_transaction()
        for t, part in tps:
            send(p, t, [f"{label}-{t[-4:]}-{part}-{i}".encode() for i in range(4)], partition=part)
        assert p.flush(20) == 0
        if n == 1:
            # Every partition is held back by the open transaction: LSO at its first
            # record (x: offsets 0-3, commit marker 4; y from 5).
            assert latest(broker, tps, RC) == {tp: 5 for tp in tps}
            assert latest(broker, tps, RU) == {tp: 9 for tp in tps}
        if commit:
            p.commit_transaction(20)
        else:
            p.abort_transaction(20)
    # Each partition: 3 x 4 records + 3 markers; both ends equal; only x and z visible.
    assert latest(broker, tps, RC) == latest(broker, tps, RU) == {tp: 15 for tp in tps}
    for t, part in tps:
        got = values(read(broker, t, part, isolation=RC))
        assert got == [f"{label}-{t[-4:]}-{part}-{i}".encode() for label in "xz" for i in range(4)], (t, part)
        assert len(read(broker, t, part, isolation=RU)) == 12


# ---------------------------------------------------------------- fencing


def test_second_producer_with_same_id_fences_the_first(broker):
    topic = ck.create_topic(broker, unique("txf"))
    txid = unique("txid")
    p1 = txn_producer(broker, txid)
    p1.init_transactions(20)
    p1.begin_transaction()
    d1 = send(p1, topic, vals("first", 5))
    assert p1.flush(20) == 0 and len(d1.ok) == 5
    p2 = txn_producer(broker, txid)
    p2.init_transactions(20)  # bumps the epoch, aborts p1's open transaction
    # p1's transaction is aborted: read_committed does not wait for it any more.
    assert latest(broker, [(topic, 0)], RC) == latest(broker, [(topic, 0)], RU)
    assert read(broker, topic, isolation=RC) == []
    # The zombie writes again to the partition already in its transaction (straight to
    # Produce with the old epoch), then tries to commit.
    # librdkafka raises the fatal error from flush() (out of the delivery callback).
    zombie = send(p1, topic, vals("zombie", 3))
    with pytest.raises((KafkaException, SystemError)) as e:
        p1.flush(10)
        p1.commit_transaction(10)
    assert zombie.ok == [], f"a fenced producer's records were acknowledged: {zombie.ok}"
    err = fatal_error(e)
    assert err.fatal(), f"fencing must be fatal for the old producer, got {err}"
    assert err.code() in (KafkaError._FENCED, KafkaError.PRODUCER_FENCED,
                          KafkaError.INVALID_PRODUCER_EPOCH), err
    # Nothing of the zombie reached the log; p2 works.
    assert values(read(broker, topic, isolation=RU)) == vals("first", 5)
    p2.begin_transaction()
    send(p2, topic, vals("second", 3))
    p2.commit_transaction(20)
    assert values(read(broker, topic, isolation=RC)) == vals("second", 3)


def test_fenced_producer_cannot_add_a_new_partition(broker):
    topic = ck.create_topic(broker, unique("txf2"), partitions=2)
    txid = unique("txid")
    p1 = txn_producer(broker, txid)
    p1.init_transactions(20)
    p2 = txn_producer(broker, txid)
    p2.init_transactions(20)
    p1.begin_transaction()  # local only
    d = send(p1, topic, [b"zombie"], partition=1)  # needs AddPartitionsToTxn with the old epoch
    with pytest.raises((KafkaException, SystemError)) as e:
        p1.flush(10)
        p1.commit_transaction(10)
    assert d.ok == []
    assert fatal_error(e).fatal(), fatal_error(e)
    assert read(broker, topic, 1, isolation=RU) == []


# ---------------------------------------------------------------- timeouts


@pytest.mark.timeout_s(60)
def test_transaction_timeout_aborts_and_fences(start_broker):
    b = start_broker(FAST_ABORT)
    topic = ck.create_topic(b, unique("txto"))
    txid = unique("txid")
    p = txn_producer(b, txid, transaction_timeout_ms=2000, socket_timeout_ms=2000)
    p.init_transactions(20)
    t0 = time.monotonic()
    p.begin_transaction()
    d = send(p, topic, vals("late", 5))
    assert p.flush(20) == 0 and len(d.ok) == 5
    lso = latest(b, [(topic, 0)], RC)
    # Under load the 2 s timeout may already have fired; while it has not, the open
    # transaction holds the last stable offset at 0.
    if time.monotonic() - t0 < 1.5:
        assert lso == {(topic, 0): 0}
    # The broker aborts it after ~2 s: an abort marker lands and the LSO catches up.
    wait_until(lambda: latest(b, [(topic, 0)], RC) == {(topic, 0): 6}, 15, "the timed-out transaction aborted")
    took = time.monotonic() - t0
    assert took < 12, f"aborted after {took:.1f}s with transaction.timeout.ms=2000"
    assert read(b, topic, isolation=RC) == []
    assert values(read(b, topic, isolation=RU)) == vals("late", 5)
    with pytest.raises(KafkaException) as e:
        p.commit_transaction(10)
    assert e.value.args[0].code() in (KafkaError._FENCED, KafkaError.PRODUCER_FENCED,
                                      KafkaError.INVALID_PRODUCER_EPOCH,
                                      KafkaError.INVALID_TXN_STATE), e.value.args[0]
    assert read(b, topic, isolation=RC) == []
    # The transactional.id starts over with a new producer.
    p2 = txn_producer(b, txid)
    p2.init_transactions(20)
    p2.begin_transaction()
    send(p2, topic, vals("new", 2))
    p2.commit_transaction(20)
    assert values(read(b, topic, isolation=RC)) == vals("new", 2)


# ---------------------------------------------------------------- admin: describe / list


def kp_admin(b):
    from kafka import KafkaAdminClient
    return KafkaAdminClient(bootstrap_servers=b.bootstrap, request_timeout_ms=10000)


def test_describe_and_list_transactions_and_producers(broker):
    from kafka import TopicPartition as KTP
    from kafka.admin._transactions import TransactionState
    from kafka.errors import TransactionalIdNotFoundError
    topic = ck.create_topic(broker, unique("txd"), partitions=2)
    txid = unique("txid")
    p = txn_producer(broker, txid, transaction_timeout_ms=45000)
    p.init_transactions(20)
    p.begin_transaction()
    send(p, topic, [b"p0"], partition=0)
    send(p, topic, [b"p1a", b"p1b"], partition=1)
    assert p.flush(20) == 0
    a = kp_admin(broker)
    try:
        desc = a.describe_transactions([txid])[txid]
        assert desc.state == TransactionState.ONGOING
        assert desc.topic_partitions == {KTP(topic, 0), KTP(topic, 1)}
        assert desc.transaction_timeout_ms == 45000
        assert desc.producer_id >= 0 and desc.producer_epoch >= 0
        assert abs(desc.transaction_start_time_ms - time.time() * 1000) < 60_000
        listed = [t for ts in a.list_transactions().values() for t in ts if t.transactional_id == txid]
        assert [(t.producer_id, t.state) for t in listed] == [(desc.producer_id, TransactionState.ONGOING)]
        ongoing = [t.transactional_id for ts in a.list_transactions(state_filters=["Ongoing"]).values() for t in ts]
        assert txid in ongoing
        prod = a.describe_producers([KTP(topic, 0), KTP(topic, 1)])
        for part in (0, 1):
            mine = [s for s in prod[KTP(topic, part)].active_producers if s.producer_id == desc.producer_id]
            assert len(mine) == 1, prod
            assert mine[0].producer_epoch == desc.producer_epoch
            assert mine[0].current_transaction_start_offset == 0, mine
        assert [s.last_sequence for s in prod[KTP(topic, 1)].active_producers
                if s.producer_id == desc.producer_id] == [1]
        p.commit_transaction(20)
        # The commit is answered once PrepareCommit is recorded; CompleteCommit follows
        # when the markers are written (Kafka's order), within moments.
        deadline = time.monotonic() + 10
        while True:
            desc2 = a.describe_transactions([txid])[txid]
            if desc2.state == TransactionState.COMPLETE_COMMIT or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert desc2.state == TransactionState.COMPLETE_COMMIT, desc2
        assert desc2.topic_partitions == set()
        assert desc2.producer_id == desc.producer_id
        ongoing = [t.transactional_id for ts in a.list_transactions(state_filters=["Ongoing"]).values() for t in ts]
        assert txid not in ongoing
        prod = a.describe_producers([KTP(topic, 0)])
        mine = [s for s in prod[KTP(topic, 0)].active_producers if s.producer_id == desc.producer_id]
        assert [s.current_transaction_start_offset for s in mine] == [-1]
        with pytest.raises(TransactionalIdNotFoundError):
            a.describe_transactions([unique("never-used")])
    finally:
        a.close()


# ---------------------------------------------------------------- consume-transform-produce


def transformer_main(cfg):
    """Reads `input` in a consumer group (read_committed), writes b"out:" + value to the
    same partition of `output`, and commits the input offsets in the same transaction.
    Prints JSON events. cfg["hold_at"]: after flushing that transaction's records, wait
    (to be killed) instead of committing."""
    import signal as _signal
    from confluent_kafka import Consumer, Producer

    stop = []
    _signal.signal(_signal.SIGTERM, lambda *a: stop.append(1))

    def emit(**kw):
        sys.stdout.write(json.dumps(kw) + "\n")
        sys.stdout.flush()

    p = Producer({"bootstrap.servers": cfg["bootstrap"], "transactional.id": cfg["txid"],
                  "linger.ms": 5, "log_level": 3})
    p.init_transactions(30)  # aborts whatever a crashed predecessor left open
    emit(ev="init")
    c = Consumer({"bootstrap.servers": cfg["bootstrap"], "group.id": cfg["group"],
                  "group.instance.id": "transformer", "session.timeout.ms": 10000,
                  "heartbeat.interval.ms": 500, "enable.auto.commit": False,
                  "auto.offset.reset": "earliest", "isolation.level": "read_committed",
                  "log_level": 3})
    c.subscribe([cfg["input"]])
    n = 0
    while not stop:
        msgs = [m for m in c.consume(cfg["batch"], 0.3) if not m.error()]
        if not msgs:
            continue
        p.begin_transaction()
        for m in msgs:
            p.produce(cfg["output"], key=m.key(), value=b"out:" + m.value(), partition=m.partition())
        assert p.flush(30) == 0
        emit(ev="flushed", txn=n, count=len(msgs))
        if cfg.get("hold_at") == n:
            time.sleep(60)
        p.send_offsets_to_transaction(c.position(c.assignment()), c.consumer_group_metadata(), 30)
        p.commit_transaction(30)
        emit(ev="committed", txn=n, count=len(msgs))
        n += 1
    c.close()
    emit(ev="closed")


class Transformer:
    def __init__(self, cfg):
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "transformer", json.dumps(cfg)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            preexec_fn=_die_with_parent, cwd=os.path.dirname(os.path.abspath(__file__)))
        self.events = []
        self.stderr = []
        self.cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=lambda: self.stderr.extend(self.proc.stderr), daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            with self.cond:
                self.events.append(json.loads(line))
                self.cond.notify_all()

    def wait(self, pred, timeout, what):
        deadline = time.monotonic() + timeout
        with self.cond:
            while not any(pred(e) for e in self.events):
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise AssertionError(f"transformer: no {what} within {timeout}s; events {self.events[-5:]}; "
                                         f"exit {self.proc.poll()}; stderr {''.join(self.stderr[-20:])}")
                self.cond.wait(0.2)

    def kill9(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


@pytest.mark.timeout_s(120)
def test_consume_transform_produce_exactly_once_across_a_crash(start_broker):
    b = start_broker(FAST_ABORT)
    src = ck.create_topic(b, unique("ctp-in"), partitions=2)
    dst = ck.create_topic(b, unique("ctp-out"), partitions=2)
    n = 400
    inputs = {part: [f"p{part}-{i}".encode() for i in range(n // 2)] for part in (0, 1)}
    plain = ck.producer(b)
    for part, vs in inputs.items():
        assert ck.produce_all(plain, src, [{"value": v} for v in vs], partition=part).failed == []
    cfg = {"bootstrap": b.bootstrap, "txid": unique("ctp"), "group": unique("ctp-g"),
           "input": src, "output": dst, "batch": 25, "hold_at": 3}
    procs = []
    try:
        t1 = Transformer(cfg)
        procs.append(t1)
        # kill -9 in the middle of transaction 3: its records are in the output log,
        # its offsets are pending in the group, nothing is committed yet.
        t1.wait(lambda e: e["ev"] == "flushed" and e["txn"] == 3, 60, "transaction 3")
        t1.kill9()
        written_before = sum(len(read(b, dst, part, isolation=RU)) for part in (0, 1))
        t2 = Transformer({**cfg, "hold_at": None})
        procs.append(t2)
        c = ck.consumer(b, group_id=cfg["group"])
        try:
            def caught_up():
                got = c.committed([TopicPartition(src, 0), TopicPartition(src, 1)], timeout=10)
                return all(tp.offset == n // 2 for tp in got) and got
            wait_until(caught_up, 60, "the group's committed offsets to reach the end of the input")
        finally:
            c.close()
        t2.proc.terminate()
        t2.proc.wait(20)
    finally:
        for t in procs:
            t.kill9()
    committed = [e for t in procs for e in t.events if e["ev"] == "committed"]
    assert sum(e["count"] for e in committed) == n
    # Exactly once under read_committed, in input order per partition.
    for part in (0, 1):
        got = values(read(b, dst, part, isolation=RC))
        assert got == [b"out:" + v for v in inputs[part]], \
            f"partition {part}: {len(got)} records, {len(set(got))} distinct, want {len(inputs[part])}"
    # The crashed transaction really reached the log (and was aborted): more raw records.
    raw = sum(len(read(b, dst, part, isolation=RU)) for part in (0, 1))
    assert written_before > sum(e["count"] for e in t1.events if e["ev"] == "committed")
    assert raw > n, f"read_uncommitted shows {raw} records: the killed transaction's records are missing"


# ---------------------------------------------------------------- broker kill -9


@pytest.mark.timeout_s(90)
def test_broker_kill9_committed_stays_open_one_aborted_by_next_init(start_broker):
    b = start_broker(FAST_ABORT)
    topic = ck.create_topic(b, unique("txk"), partitions=2)
    tps = [(topic, 0), (topic, 1)]
    txid = unique("txid")
    p = txn_producer(b, txid)
    p.init_transactions(20)
    for label, commit in (("c", True), ("a", False), ("o", None)):
        p.begin_transaction()
        for part in (0, 1):
            send(p, topic, vals(f"{label}{part}-", 4), partition=part)
        assert p.flush(20) == 0
        if commit is True:
            p.commit_transaction(20)
        elif commit is False:
            p.abort_transaction(20)
    # c: 0-3 + marker 4; a: 5-8 + marker 9; o: 10-13 open.
    assert latest(b, tps, RC) == {tp: 10 for tp in tps}
    b.kill9()
    p.purge()
    del p
    b.restart()
    # The committed transaction is visible, the aborted one hidden, the open one still
    # holds the LSO (the default transaction.timeout.ms is 60 s).
    for part in (0, 1):
        assert values(read(b, topic, part, isolation=RC)) == vals(f"c{part}-", 4)
        assert len(read(b, topic, part, isolation=RU)) == 12
    assert latest(b, tps, RC) == {tp: 10 for tp in tps}
    assert latest(b, tps, RU) == {tp: 14 for tp in tps}
    # The next producer with the same transactional.id aborts the open transaction.
    p2 = txn_producer(b, txid)
    p2.init_transactions(30)
    wait_until(lambda: latest(b, tps, RC) == {tp: 15 for tp in tps}, 15, "the open transaction aborted")
    p2.begin_transaction()
    for part in (0, 1):
        send(p2, topic, vals(f"n{part}-", 2), partition=part)
    p2.commit_transaction(20)
    for part in (0, 1):
        assert values(read(b, topic, part, isolation=RC)) == vals(f"c{part}-", 4) + vals(f"n{part}-", 2)
    # And all of it again after a second crash.
    b.kill9()
    b.restart()
    for part in (0, 1):
        assert values(read(b, topic, part, isolation=RC)) == vals(f"c{part}-", 4) + vals(f"n{part}-", 2)
    assert latest(b, tps, RC) == latest(b, tps, RU) == {tp: 18 for tp in tps}


@pytest.mark.timeout_s(90)
def test_broker_kill9_open_transaction_aborted_by_timeout_after_restart(start_broker):
    b = start_broker(FAST_ABORT)
    topic = ck.create_topic(b, unique("txkt"))
    txid = unique("txid")
    p = txn_producer(b, txid, transaction_timeout_ms=3000, socket_timeout_ms=3000)
    p.init_transactions(20)
    p.begin_transaction()
    send(p, topic, vals("c", 3))
    p.commit_transaction(20)
    p.begin_transaction()
    send(p, topic, vals("o", 3))
    assert p.flush(20) == 0
    b.kill9()
    p.purge()
    del p
    b.restart()
    t0 = time.monotonic()
    wait_until(lambda: latest(b, [(topic, 0)], RC) == {(topic, 0): 8}, 30,
               "the transaction left open by the crash to be aborted by its timeout")
    assert time.monotonic() - t0 < 20
    assert values(read(b, topic, isolation=RC)) == vals("c", 3)
    assert values(read(b, topic, isolation=RU)) == vals("c", 3) + vals("o", 3)
    a = kp_admin(b)
    try:
        from kafka.admin._transactions import TransactionState
        desc = a.describe_transactions([txid])[txid]
        assert desc.state == TransactionState.COMPLETE_ABORT, desc
    finally:
        a.close()
    # The id is usable again.
    p2 = txn_producer(b, txid)
    p2.init_transactions(20)
    p2.begin_transaction()
    send(p2, topic, vals("n", 2))
    p2.commit_transaction(20)
    assert values(read(b, topic, isolation=RC)) == vals("c", 3) + vals("n", 2)


def test_a_read_committed_consumer_waits_for_offsets_an_open_transaction_committed(broker):
    """KIP-447: OffsetFetch with `require_stable` (librdkafka asks for it from a
    read_committed consumer) answers UNSTABLE_OFFSET_COMMIT for a partition whose offset an
    open transaction has committed, and the client asks again. So a partition's new owner
    starts from the transaction's offset once it commits, never from the one before it
    (it would read the transaction's input twice). A read_uncommitted consumer gets the
    committed offset at once."""
    src = ck.create_topic(broker, unique("stable-in"))
    group = unique("stable-grp")
    tp = TopicPartition(src, 0)
    member = ck.consumer(broker, group_id=group)
    p = txn_producer(broker)
    p.init_transactions(20)
    p.begin_transaction()
    p.send_offsets_to_transaction([TopicPartition(src, 0, 10)], member.consumer_group_metadata(), 20)
    p.commit_transaction(20)
    p.begin_transaction()
    p.send_offsets_to_transaction([TopicPartition(src, 0, 20)], member.consumer_group_metadata(), 20)
    ru = ck.consumer(broker, group_id=group, isolation_level=RU)
    rc = ck.consumer(broker, group_id=group, isolation_level=RC)
    try:
        assert ru.committed([tp], timeout=10)[0].offset == 10
        got = {}
        waiter = threading.Thread(target=lambda: got.update(offset=rc.committed([tp], timeout=30)[0].offset),
                                  daemon=True)
        waiter.start()
        waiter.join(2)
        assert waiter.is_alive(), f"read_committed got {got} while the transaction committing 20 is open"
        p.commit_transaction(20)
        waiter.join(30)
        assert got == {"offset": 20}
        assert ru.committed([tp], timeout=10)[0].offset == 20
    finally:
        ru.close()
        rc.close()
        member.close()


# ---------------------------------------------------------------- kafka-python


def test_kafka_python_transactions_and_read_committed(broker):
    from kafka import KafkaConsumer, KafkaProducer
    from kafka import TopicPartition as KTP
    from kafka.structs import OffsetAndMetadata
    topic = ck.create_topic(broker, unique("kptx"), partitions=2)
    src = ck.create_topic(broker, unique("kptx-in"))
    group = unique("kpg")
    p = KafkaProducer(bootstrap_servers=broker.bootstrap, transactional_id=unique("kptxid"),
                      request_timeout_ms=15000)
    try:
        p.init_transactions()
        p.begin_transaction()
        for i in range(6):
            p.send(topic, value=f"c{i}".encode(), partition=i % 2)
        p.commit_transaction()
        p.begin_transaction()
        for i in range(6):
            p.send(topic, value=f"a{i}".encode(), partition=i % 2)
        p.flush(20)
        p.abort_transaction()
        p.begin_transaction()
        p.send(topic, value=b"o0", partition=0)
        p.flush(20)

        def kread(isolation, tp, count_hint):
            c = KafkaConsumer(bootstrap_servers=broker.bootstrap, isolation_level=isolation,
                              enable_auto_commit=False, request_timeout_ms=15000, fetch_max_wait_ms=200)
            try:
                c.assign([tp])
                c.seek_to_beginning(tp)
                end = c.end_offsets([tp])[tp]
                out = []
                deadline = time.monotonic() + 15
                while c.position(tp) < end and time.monotonic() < deadline:
                    for recs in c.poll(timeout_ms=200).values():
                        out.extend(r.value for r in recs)
                return out, end
            finally:
                c.close()

        t0, t1 = KTP(topic, 0), KTP(topic, 1)
        # Partition 0: c0 c2 c4 | marker | a0 a2 a4 | marker | o0 (open, at offset 8).
        got, end = kread("read_committed", t0, 3)
        assert (got, end) == ([b"c0", b"c2", b"c4"], 8)
        got, end = kread("read_uncommitted", t0, 7)
        assert (got, end) == ([b"c0", b"c2", b"c4", b"a0", b"a2", b"a4", b"o0"], 9)
        assert kread("read_committed", t1, 3) == ([b"c1", b"c3", b"c5"], 8)
        # send_offsets_to_transaction: the group's offset appears only on commit.
        p.send_offsets_to_transaction({KTP(src, 0): OffsetAndMetadata(42, "", -1)}, group)
        # (read_uncommitted: librdkafka then does not ask OffsetFetch for stable offsets,
        # which would wait for the transaction.)
        c = ck.consumer(broker, group_id=group, isolation_level=RU)
        try:
            before = c.committed([TopicPartition(src, 0)], timeout=10)[0].offset
            assert before < 0, f"a transactional offset commit is visible before the commit: {before}"
            p.commit_transaction()
            after = c.committed([TopicPartition(src, 0)], timeout=10)[0].offset
            assert after == 42
        finally:
            c.close()
        got, end = kread("read_committed", t0, 4)
        assert (got, end) == ([b"c0", b"c2", b"c4", b"o0"], 10)
    finally:
        p.close(5)


def test_kafka_python_fencing(broker):
    from kafka import KafkaProducer
    from kafka.errors import KafkaError as KPError
    topic = ck.create_topic(broker, unique("kpf"))
    txid = unique("kptxid")
    p1 = KafkaProducer(bootstrap_servers=broker.bootstrap, transactional_id=txid, request_timeout_ms=15000)
    p2 = KafkaProducer(bootstrap_servers=broker.bootstrap, transactional_id=txid, request_timeout_ms=15000)
    try:
        p1.init_transactions()
        p1.begin_transaction()
        p1.send(topic, value=b"zombie", partition=0)
        p1.flush(20)
        p2.init_transactions()
        with pytest.raises(KPError) as e:
            p1.send(topic, value=b"zombie2", partition=0).get(15)
            p1.commit_transaction()
        assert "Fenced" in type(e.value).__name__ or "Epoch" in type(e.value).__name__ \
            or "fenced" in str(e.value).lower(), repr(e.value)
        p2.begin_transaction()
        p2.send(topic, value=b"ok", partition=0)
        p2.commit_transaction()
    finally:
        p1.close(2)
        p2.close(5)
    assert values(read(broker, topic, isolation=RC)) == [b"ok"]
    assert values(read(broker, topic, isolation=RU)) == [b"zombie", b"ok"]


# ---------------------------------------------------------------- history checker


@pytest.mark.timeout_s(150)
def test_history_checker_no_aborted_reads_no_torn_no_duplicates(start_broker):
    b = start_broker(FAST_ABORT)
    ta = ck.create_topic(b, unique("chk-a"), partitions=3)
    tb = ck.create_topic(b, unique("chk-b"), partitions=2)
    parts = [(ta, i) for i in range(3)] + [(tb, i) for i in range(2)]
    rep = txn_checker.check(b.bootstrap, parts, producers=4, txns=20, abort_ratio=0.3,
                            kill_restart=(1,), kill_abandon=(2,), kill_random=(3,), kill_at_txn=5,
                            txn_timeout_ms=4000, seed=7, timeout=110)
    print(json.dumps(rep.summary()))
    assert rep.anomalies() == {}
    assert rep.errors == []
    # The history exercised what it should.
    assert rep.kills == 3
    assert rep.commits_acked >= 30 and rep.aborts_acked >= 5 and rep.killed_open >= 2
    assert rep.records_written > rep.records_committed > 0
    assert rep.live_records == rep.records_committed


if __name__ == "__main__":
    assert sys.argv[1] == "transformer"
    transformer_main(json.loads(sys.argv[2]))
