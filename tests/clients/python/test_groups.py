"""Consumer groups with real clients: confluent-kafka (librdkafka) consumers in their own
processes (so one can be killed without closing), kafka-python group consumers, and the
group administration APIs of both clients' admin clients.

A consumer process is this file run as a script (`python test_groups.py worker CONFIG`):
it subscribes, prints one JSON line per event (assignment, revocation, records read,
commit), commits synchronously after every batch it reads, and closes cleanly when a
line `close` arrives on its stdin.
"""

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time

import pytest
from confluent_kafka import ConsumerGroupTopicPartitions, KafkaError, KafkaException, TopicPartition

import ck
from harness import _die_with_parent, unique

FAST = {"group.initial.rebalance.delay.ms": 0}
# Classic consumers: a short session so a crashed member is noticed within seconds
# (6000 ms is Kafka's group.min.session.timeout.ms).
SESSION = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500}


# ---------------------------------------------------------------- the consumer process


def worker_main(cfg):
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    lock = threading.Lock()

    def emit(**kw):
        kw["t"] = time.monotonic()
        with lock:
            sys.stdout.write(json.dumps(kw) + "\n")
            sys.stdout.flush()

    conf = {
        "bootstrap.servers": cfg["bootstrap"],
        "group.id": cfg["group"],
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "log_level": 3,
    }
    conf.update(cfg.get("conf", {}))
    c = Consumer(conf)
    owned = set()

    def on_assign(cons, parts):
        owned.update(p.partition for p in parts)
        emit(ev="assign", parts=sorted(p.partition for p in parts), owned=sorted(owned))

    def on_revoke(cons, parts):
        owned.difference_update(p.partition for p in parts)
        emit(ev="revoke", parts=sorted(p.partition for p in parts), owned=sorted(owned))

    def on_lost(cons, parts):
        owned.difference_update(p.partition for p in parts)
        emit(ev="lost", parts=sorted(p.partition for p in parts), owned=sorted(owned))

    c.subscribe([cfg["topic"]], on_assign=on_assign, on_revoke=on_revoke, on_lost=on_lost)
    stop = threading.Event()

    def read_stdin():
        for line in sys.stdin:
            if line.strip() == "close":
                break
        stop.set()

    threading.Thread(target=read_stdin, daemon=True).start()
    emit(ev="started")
    while not stop.is_set():
        msgs = c.consume(num_messages=100, timeout=0.1)
        got, last = [], {}
        for m in msgs:
            if m.error():
                emit(ev="error", err=str(m.error()))
                continue
            got.append((m.partition(), m.offset(), m.value().decode()))
            last[m.partition()] = m.offset()
        if got:
            emit(ev="msgs", recs=got)
            try:
                c.commit(offsets=[TopicPartition(cfg["topic"], p, o + 1) for p, o in last.items()],
                         asynchronous=False)
                emit(ev="committed", offsets={str(p): o + 1 for p, o in last.items()})
            except KafkaException as e:
                emit(ev="commit_failed", err=str(e))
    c.close()
    emit(ev="closed")


class Worker:
    """A consumer process and the events it printed."""

    def __init__(self, broker, topic, group, conf=None, name="w"):
        self.name = name
        cfg = {"bootstrap": broker.bootstrap, "topic": topic, "group": group, "conf": conf or {}}
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "worker", json.dumps(cfg)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            preexec_fn=_die_with_parent, cwd=os.path.dirname(os.path.abspath(__file__)))
        self.events = []
        self.cond = threading.Condition()
        self.stderr = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=lambda: self.stderr.extend(self.proc.stderr), daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            ev = json.loads(line)
            with self.cond:
                self.events.append(ev)
                self.cond.notify_all()
        with self.cond:
            self.events.append({"ev": "exit", "t": time.monotonic()})
            self.cond.notify_all()

    def wait(self, pred, timeout, what):
        deadline = time.monotonic() + timeout
        with self.cond:
            while not pred(self):
                left = deadline - time.monotonic()
                if left <= 0 or (self.events and self.events[-1]["ev"] == "exit"):
                    raise AssertionError(f"{self.name}: no {what} within {timeout}s; events: "
                                         f"{self.summary()}\nstderr: {''.join(self.stderr)[-2000:]}")
                self.cond.wait(min(left, 0.2))

    def summary(self):
        return [e if e["ev"] != "msgs" else {"ev": "msgs", "n": len(e["recs"])} for e in self.events[-30:]]

    @property
    def owned(self):
        with self.cond:
            for e in reversed(self.events):
                if e["ev"] in ("assign", "revoke", "lost"):
                    return set(e["owned"])
        return set()

    def of(self, kind):
        with self.cond:
            return [e for e in self.events if e["ev"] == kind]

    @property
    def records(self):
        return [tuple(r) for e in self.of("msgs") for r in e["recs"]]

    def close(self, timeout=20):
        self.proc.stdin.write("close\n")
        self.proc.stdin.flush()
        self.proc.wait(timeout)
        self.wait(lambda w: any(e["ev"] == "exit" for e in w.events), 5, "exit")
        assert self.of("closed"), f"{self.name} did not close cleanly: {self.summary()} {''.join(self.stderr)[-2000:]}"

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)



@pytest.fixture
def spawn():
    """spawn(broker, topic, group, conf=None, name=...) -> Worker; all killed at teardown."""
    started = []

    def start(*a, **kw):
        w = Worker(*a, **kw)
        started.append(w)
        return w

    yield start
    for w in started:
        w.stop()


def produce(broker, topic, n, start=0, partition=None):
    """n records with keys k{i} and values v{i}; returns {(partition, offset): value}."""
    p = ck.producer(broker)
    recs = [{"key": f"k{i}".encode(), "value": f"v{i}".encode()} for i in range(start, start + n)]
    d = ck.produce_all(p, topic, recs, partition=partition)
    assert d.failed == []
    return {(part, off): v.decode() for part, off, _, v in d.ok}


def group_offsets(broker, group, timeout=10):
    """Committed offsets of a group via AdminClient.list_consumer_group_offsets."""
    a = ck.admin(broker)
    fut = a.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)], request_timeout=timeout)[group]
    res = fut.result(timeout)
    return {(tp.topic, tp.partition): tp.offset for tp in res.topic_partitions}


def ends(broker, topic, partitions):
    return {(topic, p): ck.watermarks(broker, topic, p)[1] for p in range(partitions)}


def consumed(workers):
    """All (partition, offset, value) read by these workers, duplicates kept."""
    return [r for w in workers for r in w.records]


def wait_all(workers, pred, timeout, what):
    deadline = time.monotonic() + timeout
    for w in workers:
        w.wait(pred, max(0.1, deadline - time.monotonic()), what)


def wait_until(cond, timeout, what, interval=0.1):
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout}s")
        time.sleep(interval)


def assert_disjoint_cover(workers, partitions):
    sets = [w.owned for w in workers]
    union = set().union(*sets)
    assert sum(len(s) for s in sets) == len(union) == partitions, \
        f"assignments overlap or miss partitions: {[sorted(s) for s in sets]}"


def assert_each_once(workers, produced):
    got = [(p, o) for p, o, _ in consumed(workers)]
    dup = {k for k in got if got.count(k) > 1} if len(got) != len(set(got)) else set()
    assert not dup, f"records read more than once: {sorted(dup)[:20]}"
    assert set(got) == set(produced), \
        f"missing {sorted(set(produced) - set(got))[:20]}, unexpected {sorted(set(got) - set(produced))[:20]}"
    for p, o, v in consumed(workers):
        assert produced[(p, o)] == v


# ---------------------------------------------------------------- classic protocol


@pytest.mark.timeout_s(90)
def test_three_consumers_share_six_partitions(broker, spawn):
    """Broker defaults (group.initial.rebalance.delay.ms=3000): three consumers started
    together get two partitions each, read every record once and commit."""
    topic = ck.create_topic(broker, unique("grp6"), partitions=6)
    group = unique("g")
    produced = produce(broker, topic, 600)
    assert {p for p, _ in produced} == set(range(6))
    ws = [spawn(broker, topic, group, SESSION, name=f"c{i}") for i in range(3)]
    wait_all(ws, lambda w: len(w.owned) == 2, 40, "two partitions")
    assert_disjoint_cover(ws, 6)
    wait_until(lambda: len(consumed(ws)) >= 600, 30, "600 records")
    time.sleep(0.5)
    assert_each_once(ws, produced)
    for w in ws:
        assert not w.of("commit_failed"), w.of("commit_failed")
        assert {p for p, _, _ in w.records} == w.owned, "each reads only its own partitions"
    # Records produced now go to the same members.
    more = produce(broker, topic, 60, start=600)
    produced.update(more)
    wait_until(lambda: len(consumed(ws)) >= 660, 20, "60 more records")
    for w in ws:
        w.close()
    assert_each_once(ws, produced)
    assert group_offsets(broker, group) == ends(broker, topic, 6)


@pytest.mark.timeout_s(120)
def test_join_leave_and_crash_rebalance(start_broker, spawn):
    b = start_broker(FAST)
    topic = ck.create_topic(b, unique("jlc"), partitions=6)
    group = unique("g")
    produced = produce(b, topic, 300)
    a = spawn(b, topic, group, SESSION, name="a")
    a.wait(lambda w: len(w.owned) == 6, 20, "all six partitions")
    wait_until(lambda: len(a.records) >= 300, 20, "300 records")
    bb = spawn(b, topic, group, SESSION, name="b")
    wait_all([a, bb], lambda w: len(w.owned) == 3, 25, "three partitions")
    assert_disjoint_cover([a, bb], 6)
    c = spawn(b, topic, group, SESSION, name="c")
    wait_all([a, bb, c], lambda w: len(w.owned) == 2, 25, "two partitions")
    assert_disjoint_cover([a, bb, c], 6)
    produced.update(produce(b, topic, 300, start=300))
    wait_until(lambda: len(consumed([a, bb, c])) >= 600, 20, "600 records")
    # c leaves cleanly (LeaveGroup): a and b share again, long before any session timeout.
    t0 = time.monotonic()
    c.close()
    wait_all([a, bb], lambda w: len(w.owned) == 3, 10, "three partitions after c left")
    assert time.monotonic() - t0 < 5.5, "a LeaveGroup must rebalance at once, not after the session timeout"
    assert_disjoint_cover([a, bb], 6)
    produced.update(produce(b, topic, 300, start=600))
    wait_until(lambda: len(consumed([a, bb, c])) >= 900, 20, "900 records")
    # b crashes (SIGKILL, no LeaveGroup): its partitions move to a after session.timeout.ms.
    time.sleep(0.5)
    t0 = time.monotonic()
    bb.kill9()
    a.wait(lambda w: len(w.owned) == 6, 25, "all six partitions after b crashed")
    moved_after = time.monotonic() - t0
    assert 3.0 <= moved_after <= 15.0, \
        f"partitions of a crashed member moved after {moved_after:.1f}s; session.timeout.ms is 6s"
    produced.update(produce(b, topic, 300, start=900))
    wait_until(lambda: {(p, o) for p, o, _ in consumed([a, bb, c])} >= set(produced), 20, "all records")
    a.close()
    # Every record was read; b committed after every batch it printed, so nothing twice.
    assert_each_once([a, bb, c], produced)
    assert group_offsets(b, group) == ends(b, topic, 6)


@pytest.mark.timeout_s(60)
def test_new_process_resumes_from_committed_offsets(start_broker, spawn):
    b = start_broker(FAST)
    topic = ck.create_topic(b, unique("resume"), partitions=2)
    group = unique("g")
    first = produce(b, topic, 200)
    w1 = spawn(b, topic, group, name="first")
    wait_until(lambda: len(w1.records) >= 200, 20, "200 records")
    w1.close()
    assert group_offsets(b, group) == ends(b, topic, 2)
    second = produce(b, topic, 100, start=200)
    w2 = spawn(b, topic, group, name="second")
    wait_until(lambda: len(w2.records) >= 100, 20, "100 new records")
    time.sleep(0.5)
    assert {(p, o) for p, o, _ in w2.records} == set(second), "the new process starts at the committed offsets"
    assert not set(first) & {(p, o) for p, o, _ in w2.records}
    w2.close()


@pytest.mark.timeout_s(90)
def test_static_membership_restart_without_rebalance(start_broker, spawn):
    b = start_broker(FAST)
    topic = ck.create_topic(b, unique("static"), partitions=6)
    group = unique("g")
    conf = lambda i: {"group.instance.id": f"inst-{i}", "session.timeout.ms": 15000,
                      "heartbeat.interval.ms": 500}
    ws = [spawn(b, topic, group, conf(i), name=f"s{i}") for i in range(3)]
    wait_all(ws, lambda w: len(w.owned) == 2, 30, "two partitions")
    time.sleep(3)  # settled: later joins of the first members may have rebalanced
    assert_disjoint_cover(ws, 6)
    before = {w.name: (len(w.of("assign")), len(w.of("revoke")), w.owned) for w in ws}
    owned1 = ws[1].owned
    # A static member closing does not send LeaveGroup; its restart within
    # session.timeout.ms takes its old assignment back and the others see nothing.
    ws[1].close()
    time.sleep(1)
    again = spawn(b, topic, group, conf(1), name="s1-again")
    again.wait(lambda w: len(w.owned) == 2, 20, "its partitions back")
    assert again.owned == owned1
    produced = produce(b, topic, 300)
    wait_until(lambda: {(p, o) for p, o, _ in consumed([ws[0], again, ws[2]])} >= set(produced),
               20, "all records")
    time.sleep(1)
    after = {w.name: (len(w.of("assign")), len(w.of("revoke")), w.owned) for w in (ws[0], ws[2])}
    assert after == {k: v for k, v in before.items() if k in after}, \
        f"the other members were rebalanced: before {before}, after {after}"
    for w in (ws[0], again, ws[2]):
        w.close()


@pytest.mark.timeout_s(90)
def test_cooperative_sticky_incremental_rebalance(start_broker, spawn):
    b = start_broker(FAST)
    topic = ck.create_topic(b, unique("coop"), partitions=6)
    group = unique("g")
    conf = {**SESSION, "partition.assignment.strategy": "cooperative-sticky"}
    produced = produce(b, topic, 300)
    a = spawn(b, topic, group, conf, name="a")
    a.wait(lambda w: len(w.owned) == 6, 20, "all six partitions")
    bb = spawn(b, topic, group, conf, name="b")
    wait_all([a, bb], lambda w: len(w.owned) == 3, 25, "three partitions")
    c = spawn(b, topic, group, conf, name="c")
    wait_all([a, bb, c], lambda w: len(w.owned) == 2, 25, "two partitions")
    assert_disjoint_cover([a, bb, c], 6)
    # Incremental: a only ever gave partitions up (never the whole set at once), and
    # never got back one it gave up; b only lost one to c.
    assert all(len(e["parts"]) < 6 for e in a.of("revoke")), a.of("revoke")
    assert sum(len(e["parts"]) for e in a.of("revoke")) == 4
    assert sum(len(e["parts"]) for e in a.of("assign")) == 6
    assert sum(len(e["parts"]) for e in bb.of("revoke")) == 1
    assert sum(len(e["parts"]) for e in bb.of("assign")) == 3
    produced.update(produce(b, topic, 300, start=300))
    wait_until(lambda: {(p, o) for p, o, _ in consumed([a, bb, c])} >= set(produced), 20, "all records")
    # c leaves: only its two partitions move.
    c.close()
    wait_all([a, bb], lambda w: len(w.owned) == 3, 20, "three partitions")
    assert sum(len(e["parts"]) for e in a.of("revoke")) == 4
    assert sum(len(e["parts"]) for e in bb.of("revoke")) == 1
    produced.update(produce(b, topic, 60, start=600))
    wait_until(lambda: {(p, o) for p, o, _ in consumed([a, bb, c])} >= set(produced), 20, "all records")
    a.close()
    bb.close()
    assert_each_once([a, bb, c], produced)


# ---------------------------------------------------------------- KIP-848


CONSUMER_PROTOCOL = {"group.protocol": "consumer"}


@pytest.mark.timeout_s(120)
def test_consumer_protocol_join_leave_every_record_once(start_broker, spawn):
    b = start_broker(FAST, group__consumer__heartbeat__interval__ms=500)
    topic = ck.create_topic(b, unique("kip848"), partitions=6)
    group = unique("g")
    produced = produce(b, topic, 300)
    ws = []
    for i in range(3):
        ws.append(spawn(b, topic, group, CONSUMER_PROTOCOL, name=f"n{i}"))
        time.sleep(1)
    wait_all(ws, lambda w: len(w.owned) == 2, 30, "two partitions")
    assert_disjoint_cover(ws, 6)
    produced.update(produce(b, topic, 300, start=300))
    wait_until(lambda: {(p, o) for p, o, _ in consumed(ws)} >= set(produced), 20, "all records")

    # ConsumerGroupDescribe through the admin client.
    a = ck.admin(b)
    desc = a.describe_consumer_groups([group], request_timeout=10)[group].result(10)
    assert desc.group_id == group
    assert str(desc.state).endswith("STABLE"), desc.state
    if hasattr(desc, "type"):
        assert str(desc.type).endswith("CONSUMER"), desc.type
    assert len(desc.members) == 3
    described = sorted(sorted(tp.partition for tp in m.assignment.topic_partitions) for m in desc.members)
    assert described == sorted(sorted(w.owned) for w in ws)
    lg = a.list_consumer_groups(request_timeout=10).result(10)
    assert group in [g.group_id for g in lg.valid]

    # One leaves: the other two take its partitions; no record is read twice.
    ws[2].close()
    wait_all(ws[:2], lambda w: len(w.owned) == 3, 20, "three partitions")
    assert_disjoint_cover(ws[:2], 6)
    produced.update(produce(b, topic, 300, start=600))
    wait_until(lambda: {(p, o) for p, o, _ in consumed(ws)} >= set(produced), 20, "all records")
    for w in ws[:2]:
        w.close()
    assert_each_once(ws, produced)
    assert group_offsets(b, group) == ends(b, topic, 6)


@pytest.mark.timeout_s(90)
def test_consumer_protocol_crash_moves_partitions(start_broker, spawn):
    b = start_broker(FAST, group__consumer__heartbeat__interval__ms=500,
                     group__consumer__session__timeout__ms=6000)
    topic = ck.create_topic(b, unique("kip848c"), partitions=4)
    group = unique("g")
    produced = produce(b, topic, 200)
    ws = [spawn(b, topic, group, CONSUMER_PROTOCOL, name=f"n{i}") for i in range(2)]
    wait_all(ws, lambda w: len(w.owned) == 2, 30, "two partitions")
    wait_until(lambda: {(p, o) for p, o, _ in consumed(ws)} >= set(produced), 20, "all records")
    time.sleep(0.5)
    t0 = time.monotonic()
    ws[1].kill9()
    ws[0].wait(lambda w: len(w.owned) == 4, 25, "all four partitions")
    moved_after = time.monotonic() - t0
    assert 3.0 <= moved_after <= 15.0, f"moved after {moved_after:.1f}s, session timeout 6s"
    produced.update(produce(b, topic, 200, start=200))
    wait_until(lambda: {(p, o) for p, o, _ in consumed(ws)} >= set(produced), 20, "all records")
    ws[0].close()
    assert_each_once(ws, produced)


# ---------------------------------------------------------------- broker restarts


@pytest.mark.timeout_s(90)
@pytest.mark.parametrize("how", ["terminate", "kill9"])
def test_committed_offsets_survive_broker_restart(start_broker, spawn, how):
    b = start_broker(FAST)
    topic = ck.create_topic(b, unique("restart"), partitions=3)
    group = unique("g")
    first = produce(b, topic, 150)
    w = spawn(b, topic, group, name="before")
    wait_until(lambda: len(w.records) >= 150, 20, "150 records")
    w.close()
    committed = group_offsets(b, group)
    assert committed == ends(b, topic, 3)
    b.restart(kill=(how == "kill9"))
    assert group_offsets(b, group) == committed
    second = produce(b, topic, 90, start=150)
    w2 = spawn(b, topic, group, name="after")
    wait_until(lambda: len(w2.records) >= 90, 30, "90 new records")
    time.sleep(0.5)
    assert {(p, o) for p, o, _ in w2.records} == set(second)
    w2.close()
    assert not set(first) & {(p, o) for p, o, _ in w2.records}
    # The group itself is known again (DescribeGroups after the reload).
    a = ck.admin(b)
    desc = a.describe_consumer_groups([group], request_timeout=10)[group].result(10)
    assert str(desc.state).endswith("EMPTY"), desc.state


# ---------------------------------------------------------------- admin: confluent-kafka


@pytest.mark.timeout_s(60)
def test_confluent_admin_list_describe_alter_delete(start_broker, spawn):
    from confluent_kafka import ConsumerGroupState
    b = start_broker(FAST)
    topic = ck.create_topic(b, unique("adm"), partitions=3)
    group, idle = unique("g"), unique("idle")
    produce(b, topic, 30)
    w = spawn(b, topic, group, {"client.id": "runnel-admin-test"}, name="m")
    w.wait(lambda x: len(x.owned) == 3, 20, "three partitions")
    wait_until(lambda: len(w.records) >= 30, 20, "30 records")
    a = ck.admin(b)
    # A group with offsets only (committed through alter, no members).
    res = a.alter_consumer_group_offsets(
        [ConsumerGroupTopicPartitions(idle, [TopicPartition(topic, 0, 3), TopicPartition(topic, 2, 7)])],
        request_timeout=10)[idle].result(10)
    assert sorted((tp.partition, tp.offset, tp.error) for tp in res.topic_partitions) == [(0, 3, None), (2, 7, None)]
    assert group_offsets(b, idle) == {(topic, 0): 3, (topic, 2): 7}

    listed = a.list_consumer_groups(request_timeout=10).result(10)
    by_id = {g.group_id: g for g in listed.valid}
    assert group in by_id and idle in by_id, sorted(by_id)
    assert by_id[group].state == ConsumerGroupState.STABLE
    assert by_id[idle].state == ConsumerGroupState.EMPTY
    assert not any(g.group_id.startswith("__") for g in listed.valid)
    only_stable = a.list_consumer_groups(request_timeout=10, states={ConsumerGroupState.STABLE}).result(10)
    assert group in [g.group_id for g in only_stable.valid]
    assert idle not in [g.group_id for g in only_stable.valid]

    descs = {g: f.result(10) for g, f in a.describe_consumer_groups([group, idle], request_timeout=10).items()}
    d = descs[group]
    assert d.state == ConsumerGroupState.STABLE
    assert d.partition_assignor == "range"
    assert len(d.members) == 1
    m = d.members[0]
    assert m.client_id == "runnel-admin-test"
    assert m.host and m.member_id
    assert sorted(tp.partition for tp in m.assignment.topic_partitions) == [0, 1, 2]
    assert {tp.topic for tp in m.assignment.topic_partitions} == {topic}
    assert descs[idle].state == ConsumerGroupState.EMPTY and descs[idle].members == []

    # Altering the offsets of a group with members is refused (UNKNOWN_MEMBER_ID in Kafka).
    res = a.alter_consumer_group_offsets([ConsumerGroupTopicPartitions(group, [TopicPartition(topic, 0, 0)])],
                                         request_timeout=10)[group].result(10)
    (tp,) = res.topic_partitions
    assert tp.error is not None and tp.error.code() == KafkaError.UNKNOWN_MEMBER_ID, tp.error
    assert group_offsets(b, group)[(topic, 0)] > 0
    # Deleting a group with members is refused.
    with pytest.raises(KafkaException) as e:
        a.delete_consumer_groups([group], request_timeout=10)[group].result(10)
    assert e.value.args[0].code() == KafkaError.NON_EMPTY_GROUP, e.value
    w.close()
    # Now empty: both go.
    for g, f in a.delete_consumer_groups([group, idle], request_timeout=10).items():
        f.result(10)
    listed = a.list_consumer_groups(request_timeout=10).result(10)
    assert not {group, idle} & {g.group_id for g in listed.valid}
    assert group_offsets(b, group) == {}
    with pytest.raises(KafkaException) as e:
        a.delete_consumer_groups([group], request_timeout=10)[group].result(10)
    assert e.value.args[0].code() == KafkaError.GROUP_ID_NOT_FOUND, e.value


# ---------------------------------------------------------------- kafka-python


@pytest.mark.timeout_s(90)
def test_kafka_python_group_consumers_and_admin(start_broker):
    from kafka import KafkaAdminClient, KafkaConsumer
    from kafka import TopicPartition as KTP
    from kafka.structs import OffsetAndMetadata

    b = start_broker(FAST)
    topic = ck.create_topic(b, unique("kpy"), partitions=4)
    group = unique("g")
    produced = produce(b, topic, 400)
    got = {0: [], 1: []}
    assigned = {0: set(), 1: set()}
    stop = threading.Event()
    errors = []

    def run(i):
        try:
            c = KafkaConsumer(topic, bootstrap_servers=b.bootstrap, group_id=group, client_id=f"kpy-{i}",
                              enable_auto_commit=False, auto_offset_reset="earliest",
                              session_timeout_ms=6000, heartbeat_interval_ms=500, fetch_max_wait_ms=100)
            while not stop.is_set():
                batch = c.poll(timeout_ms=100)
                for recs in batch.values():
                    got[i].extend((r.partition, r.offset, r.value.decode()) for r in recs)
                if batch:
                    c.commit()
                assigned[i] = {tp.partition for tp in c.assignment()}
            c.close()
        except Exception as e:  # reported by the test
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(2)]
    for t in threads:
        t.start()
        time.sleep(0.5)
    wait_until(lambda: errors or (len(assigned[0]) == 2 and len(assigned[1]) == 2), 40, "two partitions each")
    assert not errors, errors
    wait_until(lambda: {(p, o) for p, o, _ in got[0] + got[1]} >= set(produced), 30, "all records")
    time.sleep(1)

    a = KafkaAdminClient(bootstrap_servers=b.bootstrap, request_timeout_ms=10000)
    try:
        listed = {g["group_id"]: g for g in a.list_groups()}
        assert group in listed, listed
        assert listed[group]["protocol_type"] == "consumer"
        desc = a.describe_groups([group])[group]
        assert desc["group_state"] == "Stable" and desc["protocol_data"] == "range", desc
        assert sorted(m["client_id"] for m in desc["members"]) == ["kpy-0", "kpy-1"]
        parts = sorted(tp for m in desc["members"] for tp in _kp_assignment(m["member_assignment"]))
        assert parts == [(topic, p) for p in range(4)], desc["members"]

        assert a.delete_groups([group]) == {group: "NonEmptyGroupError"}
        stop.set()
        for t in threads:
            t.join(20)
        assert not errors, errors
        all_got = got[0] + got[1]
        assert len(all_got) == len({(p, o) for p, o, _ in all_got}) == len(produced)
        assert assigned[0] | assigned[1] == set(range(4))

        offsets = a.list_group_offsets(group)[group]
        assert {tp.partition: om.offset for tp, om in offsets.items()} == \
            {p: o for (_, p), o in ends(b, topic, 4).items()}
        res = a.alter_group_offsets(group, {KTP(topic, 0): OffsetAndMetadata(1, "", -1)})
        assert all(getattr(e, "errno", 0) == 0 for e in res.values()), res
        assert a.list_group_offsets(group)[group][KTP(topic, 0)].offset == 1
        res = a.delete_group_offsets(group, [KTP(topic, 1)])
        assert all(getattr(e, "errno", 0) == 0 for e in res.values()), res
        left = a.list_group_offsets(group)[group]
        assert KTP(topic, 1) not in left and KTP(topic, 0) in left
        assert a.delete_groups([group, "no-such-group"]) == {group: "OK", "no-such-group": "GroupIdNotFoundError"}
        assert group not in [g["group_id"] for g in a.list_groups()]
    finally:
        stop.set()
        a.close()


def _kp_assignment(ma):
    """(topic, partition) pairs of a kafka-python DescribeGroups member_assignment, in
    whatever form kafka-python hands it over (decoded object or dict)."""
    if isinstance(ma, (bytes, bytearray)):
        from kafka.protocol.consumer.group import ConsumerProtocolAssignment
        ma = ConsumerProtocolAssignment.decode(ma)
    if isinstance(ma, dict):
        topics = ma.get("assigned_partitions") or ma.get("assignment") or []
        return [(t.get("topic"), p) for t in topics for p in t.get("partitions", [])]
    topics = getattr(ma, "assigned_partitions", None) or getattr(ma, "assignment", [])
    out = []
    for t in topics:
        name = getattr(t, "topic", None) or t[0]
        parts = getattr(t, "partitions", None) or t[1]
        out.extend((name, p) for p in parts)
    return out


if __name__ == "__main__":
    assert sys.argv[1] == "worker"
    worker_main(json.loads(sys.argv[2]))
