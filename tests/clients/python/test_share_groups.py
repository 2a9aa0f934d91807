"""Share groups (KIP-932) with confluent-kafka's ShareConsumer (librdkafka), and the
error cases no client shows, on the raw wire (kwire).

A share consumer process is this file run as a script (`python test_share_groups.py
worker CONFIG`): it subscribes, polls, acknowledges each record as CONFIG's `action`
says (accept, release, reject, or hold: never acknowledge), and prints one JSON line
per record it got (partition, offset, value). `hold` consumers stay until killed.
"""

import json
import os
import queue
import struct
import subprocess
import sys
import threading
import time

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource

import ck
import kwire
from harness import _die_with_parent, unique

# A short lock so an unacknowledged record comes back within seconds (Kafka's bounds
# allow it once group.share.min.record.lock.duration.ms is lowered too).
SHORT_LOCK = {
    "group.share.min.record.lock.duration.ms": 500,
    "group.share.record.lock.duration.ms": 2000,
}

# ---------------------------------------------------------------- the consumer process


def worker_main(cfg):
    from confluent_kafka import AcknowledgeType, ShareConsumer

    def emit(**kw):
        kw["t"] = time.monotonic()
        sys.stdout.write(json.dumps(kw) + "\n")
        sys.stdout.flush()

    action = cfg.get("action", "accept")
    conf = {
        "bootstrap.servers": cfg["bootstrap"],
        "group.id": cfg["group"],
        "log_level": 3,
        "share.acknowledgement.mode": "implicit" if action == "accept" else "explicit",
    }
    c = ShareConsumer(conf)
    c.subscribe([cfg["topic"]])
    emit(ev="ready")
    deadline = time.monotonic() + cfg.get("run_s", 30)
    kind = {"release": AcknowledgeType.RELEASE, "reject": AcknowledgeType.REJECT,
            "accept_explicit": AcknowledgeType.ACCEPT}
    while time.monotonic() < deadline:
        msgs = c.poll(0.5)
        for m in msgs:
            if m.error():
                emit(ev="error", error=str(m.error()))
                continue
            emit(ev="rec", p=m.partition(), o=m.offset(), v=m.value().decode())
            if action in kind:
                c.acknowledge(m, kind[action])
        if msgs and cfg.get("work_s"):
            time.sleep(cfg["work_s"])  # the work a record takes, so others get a turn
        if action == "hold" and msgs:
            # Keep the records acquired and never poll again (explicit mode refuses a
            # poll with records unacknowledged): wait to be killed.
            emit(ev="holding")
            time.sleep(3600)
        if action in kind and msgs:
            c.commit_sync(10)
    c.close()
    emit(ev="closed")


class Worker:
    def __init__(self, broker, group, topic, action="accept", run_s=30, work_s=0):
        cfg = {"bootstrap": broker.bootstrap, "group": group, "topic": topic,
               "action": action, "run_s": run_s, "work_s": work_s}
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "worker", json.dumps(cfg)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            preexec_fn=_die_with_parent)
        self.events = queue.Queue()
        self.records = []  # (partition, offset, value, t)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if ev["ev"] == "rec":
                self.records.append((ev["p"], ev["o"], ev["v"], ev["t"]))
            self.events.put(ev)

    def wait_for(self, kind, timeout=30):
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"worker event {kind} not seen in {timeout}s"
            try:
                ev = self.events.get(timeout=left)
            except queue.Empty:
                continue
            if ev["ev"] == kind:
                return ev

    def kill9(self):
        self.proc.kill()
        self.proc.wait(5)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
def workers():
    started = []
    yield lambda *a, **kw: started.append(Worker(*a, **kw)) or started[-1]
    for w in started:
        w.stop()


def share_topic(broker, partitions=2):
    """A topic, and a share group reading it from the earliest offset."""
    topic = ck.create_topic(broker, unique("share"), partitions)
    group = unique("sg")
    a = ck.admin(broker)
    r = ConfigResource(ConfigResource.Type.GROUP, group, incremental_configs=[
        ConfigEntry("share.auto.offset.reset", "earliest",
                    incremental_operation=AlterConfigOpType.SET)])
    a.incremental_alter_configs([r])[r].result(timeout=10)
    find_coordinator(broker, group)
    return topic, group


def find_coordinator(broker, group):
    """As a client does first: the raw-wire tests then talk to the coordinator directly."""
    kwire.find_coordinator(broker.bootstrap, group)


def produce(broker, topic, n, partitions=2, prefix="v"):
    p = ck.producer(broker)
    d = ck.produce_all(p, topic, ({"value": f"{prefix}{i}", "partition": i % partitions}
                                  for i in range(n)))
    assert not d.failed
    return {f"{prefix}{i}" for i in range(n)}


def wait_until(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"not reached in {timeout}s: {what}"
        time.sleep(0.1)


def drained(broker, group, topic, quiet_s=3.0):
    """Records a fresh share consumer of the group gets within `quiet_s` (none once
    every record is acknowledged)."""
    from confluent_kafka import ShareConsumer

    c = ShareConsumer({"bootstrap.servers": broker.bootstrap, "group.id": group,
                       "log_level": 3})
    c.subscribe([topic])
    got = []
    deadline = time.monotonic() + quiet_s
    while time.monotonic() < deadline:
        got += [m.value().decode() for m in c.poll(0.5) if not m.error()]
    c.close()
    return got


# ---------------------------------------------------------------- real clients


@pytest.mark.timeout_s(90)
def test_five_share_consumers_split_a_topic_and_every_record_is_accepted_once(start_broker, workers):
    # A member learns its assignment from its next heartbeat once the group's topics are
    # initialized (Kafka's way): a 1 s interval lets all five hold partitions within 2 s.
    broker = start_broker({"group.share.heartbeat.interval.ms": 1000})
    topic, group = share_topic(broker)
    ws = [workers(broker, group, topic, run_s=40, work_s=0.3) for _ in range(5)]
    for w in ws:
        w.wait_for("ready")
    time.sleep(3)  # every member joined, assigned and fetching, so the records spread
    expected = set()
    for round in range(20):
        expected |= produce(broker, topic, 100, prefix=f"r{round}-")
        time.sleep(0.1)
    got = lambda: [r[2] for w in ws for r in w.records]
    t0 = time.monotonic()
    wait_until(lambda: set(got()) >= expected, 40, "every record delivered")
    print(f"all delivered in {time.monotonic() - t0:.2f}s", {id(w): len(w.records) for w in ws})
    for w in ws:
        w.stop()
    values = got()
    assert set(values) == expected
    # Implicit acknowledgement accepts each batch at the next poll: no redelivery.
    assert len(values) == len(expected), f"{len(values) - len(expected)} redeliveries"
    assert all(w.records for w in ws), "every consumer gets records"
    assert drained(broker, group, topic) == []


@pytest.mark.timeout_s(90)
def test_records_of_a_killed_consumer_are_redelivered_after_the_lock_timeout(start_broker, workers):
    broker = start_broker(SHORT_LOCK)
    topic, group = share_topic(broker, partitions=1)
    holder = workers(broker, group, topic, action="hold")
    holder.wait_for("ready")
    time.sleep(1)
    expected = produce(broker, topic, 50, partitions=1)
    holder.wait_for("holding")
    held = {r[2] for r in holder.records}
    assert held
    holder.kill9()
    killed_at = time.monotonic()
    other = workers(broker, group, topic)
    wait_until(lambda: {r[2] for r in other.records} >= expected, 30, "redelivery")
    first_held = min(r[3] for r in other.records if r[2] in held)
    latency = first_held - killed_at
    print(f"redelivery {latency:.2f}s after kill -9 (lock 2 s)")
    assert latency < 15
    other.stop()
    assert drained(broker, group, topic) == []


@pytest.mark.timeout_s(90)
def test_a_record_released_at_the_delivery_limit_is_archived(start_broker, workers):
    broker = start_broker({"group.share.delivery.count.limit": 3})
    topic, group = share_topic(broker, partitions=1)
    w = workers(broker, group, topic, action="release", run_s=12)
    w.wait_for("ready")
    time.sleep(1)
    produce(broker, topic, 1, partitions=1)
    w.wait_for("closed", timeout=40)
    deliveries = [r for r in w.records if r[2] == "v0"]
    assert len(deliveries) == 3, f"delivered {len(deliveries)} times, limit 3"
    assert drained(broker, group, topic) == []


@pytest.mark.timeout_s(90)
def test_rejected_records_are_never_redelivered(start_broker, workers):
    broker = start_broker(SHORT_LOCK)
    topic, group = share_topic(broker, partitions=1)
    w = workers(broker, group, topic, action="reject", run_s=6)
    w.wait_for("ready")
    time.sleep(1)
    expected = produce(broker, topic, 20, partitions=1)
    w.wait_for("closed", timeout=40)
    values = [r[2] for r in w.records]
    assert sorted(values) == sorted(expected), "each rejected record delivered exactly once"
    assert drained(broker, group, topic) == []


@pytest.mark.timeout_s(90)
def test_a_broker_restart_loses_no_acknowledgement(start_broker):
    broker = start_broker()
    topic, group = share_topic(broker, partitions=1)
    expected = produce(broker, topic, 100, partitions=1)
    accepted = accept_evens_release_odds(broker.bootstrap, group, topic)
    # A crash right after the acknowledgements were answered: nothing written is lost.
    broker.restart(kill=True)
    later = produce(broker, topic, 50, partitions=1, prefix="w")
    rest = drained(broker, group, topic, quiet_s=6)
    assert not set(rest) & set(accepted), "accepted records delivered again after a restart"
    assert sorted(rest) == sorted((expected | later) - set(accepted))


def accept_evens_release_odds(bootstrap, group, topic):
    """One explicit-mode poll: offsets that are even are accepted, odd ones released;
    returns the accepted values once the broker confirmed them."""
    from confluent_kafka import AcknowledgeType, ShareConsumer

    c = ShareConsumer({"bootstrap.servers": bootstrap, "group.id": group,
                       "share.acknowledgement.mode": "explicit", "log_level": 3})
    c.subscribe([topic])
    accepted = []
    deadline = time.monotonic() + 40
    while not accepted:
        assert time.monotonic() < deadline, "nothing delivered"
        for m in c.poll(0.5):
            if m.error():
                continue
            if m.offset() % 2 == 0:
                c.acknowledge(m, AcknowledgeType.ACCEPT)
                accepted.append(m.value().decode())
            else:
                c.acknowledge(m, AcknowledgeType.RELEASE)
    results = c.commit_sync(30)
    assert results and all(e is None for e in results.values()), results
    c.close()
    return accepted


@pytest.mark.timeout_s(240)
def test_a_leader_kill_on_a_cluster_loses_no_acknowledgement(tmp_path):
    from confluent_kafka import ShareConsumer
    from confluent_kafka.admin import NewTopic

    from cluster import Cluster

    c = Cluster(tmp_path).start()
    try:
        topic, group = unique("share-ha"), unique("sg-ha")
        a = AdminClient({"bootstrap.servers": c.bootstrap})
        a.create_topics([NewTopic(topic, 1, 3)], operation_timeout=20)[topic].result(30)
        c.wait_for("topic in sync", lambda: len(c.partition_state(topic)[2]) == 3)
        r = ConfigResource(ConfigResource.Type.GROUP, group, incremental_configs=[
            ConfigEntry("share.auto.offset.reset", "earliest",
                        incremental_operation=AlterConfigOpType.SET)])
        a.incremental_alter_configs([r])[r].result(timeout=30)
        p = Producer({"bootstrap.servers": c.bootstrap, "acks": "all", "log_level": 3})
        for i in range(100):
            p.produce(topic, value=f"v{i}".encode(), partition=0)
        assert p.flush(30) == 0
        expected = {f"v{i}" for i in range(100)}
        accepted = accept_evens_release_odds(c.bootstrap, group, topic)
        leader, _, _ = c.partition_state(topic)
        c.node(leader).kill9()
        c.wait_for("a new leader", lambda: c.partition_state(topic)[0] not in (leader, -1))
        consumer = ShareConsumer({"bootstrap.servers": c.alive_bootstrap(), "group.id": group,
                                  "log_level": 3})
        consumer.subscribe([topic])
        rest = []
        want = expected - set(accepted)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not set(rest) >= want:
            rest += [m.value().decode() for m in consumer.poll(0.5) if not m.error()]
        # A little longer: nothing accepted may come back.
        end = time.monotonic() + 3
        while time.monotonic() < end:
            rest += [m.value().decode() for m in consumer.poll(0.5) if not m.error()]
        consumer.close()
        assert not set(rest) & set(accepted), "accepted records delivered again after failover"
        assert set(rest) == want
    finally:
        problems = c.stop()
    assert not problems, problems


# ---------------------------------------------------------------- raw wire


def read_header_tags(r):
    r.take(1)  # the response header's (empty) tagged fields


def top_level_error(r):
    """Reads a flexible response's header, ThrottleTimeMs, ErrorCode and ErrorMessage;
    returns the error code."""
    read_header_tags(r)
    r.int32()
    err = r.int16()
    cstr(r)
    return err


def cstr(r):
    n = r.uvarint()
    return None if n == 0 else r.take(n - 1).decode()


def heartbeat(conn, group, member, epoch, topics):
    """ShareGroupHeartbeat v1: (error, member epoch)."""
    return heartbeat_assigned(conn, group, member, epoch, topics)[:2]


def heartbeat_assigned(conn, group, member, epoch, topics):
    """ShareGroupHeartbeat v1: (error, member epoch, assignment: {topic id: [partitions]},
    None when the answer carries none)."""
    body = kwire.compact_string(group) + kwire.compact_string(member)
    body += struct.pack(">i", epoch) + kwire.compact_string(None)
    if topics is None:
        body += kwire.uvarint(0)
    else:
        body += kwire.uvarint(len(topics) + 1) + b"".join(kwire.compact_string(t) for t in topics)
    body += kwire.uvarint(0)
    r = conn.request(76, 1, body, header_version=2)
    err = top_level_error(r)
    cstr(r)
    member_epoch = r.int32()
    r.int32()  # heartbeat interval
    if r.int8() < 0:
        return err, member_epoch, None
    assignment = {}
    for _ in range(r.uvarint() - 1):
        tid = r.take(16)
        assignment[tid] = [r.int32() for _ in range(r.uvarint() - 1)]
        r.take(1)
    return err, member_epoch, assignment


def one_partition(topic_id, partition):
    """The start of a one-topic, one-partition Topics array (the partition's fields follow)."""
    return kwire.uvarint(2) + topic_id + kwire.uvarint(2) + struct.pack(">i", partition)


def ack_batches(acks):
    """AcknowledgementBatches: (first, last, type) each, one type for the whole range."""
    body = kwire.uvarint(len(acks) + 1)
    for first, last, kind in acks:
        body += struct.pack(">qq", first, last) + kwire.uvarint(2) + struct.pack(">b", kind)
        body += kwire.uvarint(0)
    return body


def share_fetch(conn, group, member, epoch, topic_id, partition, acks=(), max_wait_ms=0,
                max_bytes=1 << 20, max_records=100):
    body = kwire.compact_string(group) + kwire.compact_string(member)
    body += struct.pack(">iiiiii", epoch, max_wait_ms, 1, max_bytes, max_records, max_records)
    body += one_partition(topic_id, partition)
    body += ack_batches(acks) + kwire.uvarint(0) + kwire.uvarint(0)  # partition, topic tags
    body += kwire.uvarint(1) + kwire.uvarint(0)  # no forgotten topics; tags
    r = conn.request(78, 1, body, header_version=2)
    err = top_level_error(r)
    r.int32()  # acquisition lock timeout
    parts = []
    for _ in range(r.uvarint() - 1):
        r.take(16)
        for _ in range(r.uvarint() - 1):
            index, perr = r.int32(), r.int16()
            cstr(r)
            ack_err = r.int16()
            cstr(r)
            r.int32(), r.int32()
            r.take(1)  # leader tags
            n = r.uvarint()
            r.take(max(n - 1, 0))
            acquired = []
            for _ in range(r.uvarint() - 1):
                acquired.append((r.int64(), r.int64(), r.int16()))
                r.take(1)
            r.take(1)
            parts.append((index, perr, ack_err, acquired))
        r.take(1)
    return err, parts


def share_acknowledge(conn, group, member, epoch, topic_id, partition, acks):
    """ShareAcknowledge v1: (top-level error, [(partition, error)])."""
    body = kwire.compact_string(group) + kwire.compact_string(member)
    body += struct.pack(">i", epoch)
    body += one_partition(topic_id, partition)
    body += ack_batches(acks)
    body += kwire.uvarint(0) + kwire.uvarint(0) + kwire.uvarint(0)  # partition, topic, request tags
    r = conn.request(79, 1, body, header_version=2)
    err = top_level_error(r)
    parts = []
    for _ in range(r.uvarint() - 1):
        r.take(16)
        for _ in range(r.uvarint() - 1):
            index, perr = r.int32(), r.int16()
            cstr(r)
            r.int32(), r.int32()
            r.take(2)  # leader tags, partition tags
            parts.append((index, perr))
        r.take(1)
    return err, parts


def topic_id_of(broker, topic):
    from confluent_kafka import TopicCollection
    a = ck.admin(broker)
    d = a.describe_topics(TopicCollection([topic]))[topic].result(timeout=10)
    tid = d.topic_id
    return struct.pack(">qq", tid.get_most_significant_bits(), tid.get_least_significant_bits())


@pytest.mark.timeout_s(60)
def test_wire_errors_are_kafkas(start_broker):
    broker = start_broker()
    topic, group = share_topic(broker, partitions=1)
    produce(broker, topic, 5, partitions=1)
    tid = topic_id_of(broker, topic)
    host, port = broker.bootstrap.split(":")
    with kwire.Conn(host, int(port)) as c:
        # Heartbeats: an unknown member, an empty member id, a join without topics.
        assert heartbeat(c, group, "nobody", 3, None)[0] == 25  # UNKNOWN_MEMBER_ID
        assert heartbeat(c, group, "", 0, [topic])[0] == 42  # INVALID_REQUEST
        assert heartbeat(c, group, "m1", 0, None)[0] == 42
        err, epoch = heartbeat(c, group, "m1", 0, [topic])
        assert err == 0 and epoch > 0
        assert heartbeat(c, group, "m1", epoch + 7, None)[0] == 110  # FENCED_MEMBER_EPOCH

        # ShareFetch: an unknown member, a session that was never opened, acks on open.
        assert share_fetch(c, group, "nobody", 0, tid, 0)[0] == 25
        assert share_fetch(c, group, "m1", 4, tid, 0)[0] == 122  # SHARE_SESSION_NOT_FOUND
        assert share_fetch(c, group, "m1", 0, tid, 0, acks=[(0, 0, 1)])[0] == 42
        err, parts = share_fetch(c, group, "m1", 0, tid, 0, max_wait_ms=2000)
        assert err == 0
        (_, perr, _, acquired), = parts
        assert perr == 0 and acquired == [(0, 4, 1)]
        assert share_fetch(c, group, "m1", 5, tid, 0)[0] == 123  # INVALID_SHARE_SESSION_EPOCH
        # Acks for records this member does not hold: INVALID_RECORD_STATE, nothing applied.
        err, parts = share_fetch(c, group, "m1", 1, tid, 0, acks=[(3, 9, 1)])
        assert err == 0 and parts[0][2] == 121
        err, parts = share_fetch(c, group, "m1", 2, tid, 0, acks=[(0, 4, 1)])
        assert err == 0 and parts[0][2] == 0
        err, parts = share_fetch(c, group, "m1", 3, tid, 0, acks=[(0, 0, 1)])
        assert parts[0][2] == 121  # accepted already


def set_group_config(broker, group, **configs):
    a = ck.admin(broker)
    r = ConfigResource(ConfigResource.Type.GROUP, group, incremental_configs=[
        ConfigEntry(k.replace("_", "."), v, incremental_operation=AlterConfigOpType.SET)
        for k, v in configs.items()])
    a.incremental_alter_configs([r])[r].result(timeout=10)


def joined(conn, group, member, topic):
    """Heartbeats `member` into `group` until it is assigned `topic`'s partitions."""
    err, epoch = heartbeat(conn, group, member, 0, [topic])
    assert err == 0 and epoch > 0
    return epoch


def acquired_offsets(parts):
    return sorted(o for (_, _, _, acquired) in parts for (f, l, _) in acquired
                  for o in range(f, l + 1))


@pytest.mark.timeout_s(90)
def test_read_committed_share_groups_skip_aborted_and_undecided_records(start_broker):
    """share.isolation.level=read_committed (Kafka's SharePartition archives the data of
    aborted transactions, and reads only up to the last stable offset); a
    read_uncommitted group of the same topic gets everything."""
    broker = start_broker()
    topic, committed = share_topic(broker, partitions=1)
    uncommitted = unique("sg")
    set_group_config(broker, uncommitted, share_auto_offset_reset="earliest")
    set_group_config(broker, committed, share_isolation_level="read_committed")
    bad = {"share.isolation.level": "READ_COMMITTED"}
    r = ConfigResource(ConfigResource.Type.GROUP, committed, incremental_configs=[
        ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET) for k, v in bad.items()])
    a = ck.admin(broker)
    with pytest.raises(Exception, match="read_committed, read_uncommitted"):
        a.incremental_alter_configs([r])[r].result(timeout=10)

    def txn(tid):
        p = Producer({"bootstrap.servers": broker.bootstrap, "transactional.id": tid})
        p.init_transactions(15)
        p.begin_transaction()
        return p

    # Offsets: 0-2 aborted data, 3 its marker; 4-5 committed data, 6 its marker; 7 in a
    # transaction still open (the last stable offset stays at 7).
    aborted = txn(unique("tx-a"))
    for i in range(3):
        aborted.produce(topic, value=f"aborted{i}", partition=0)
    aborted.flush(10)
    aborted.abort_transaction(15)
    done = txn(unique("tx-c"))
    for i in range(2):
        done.produce(topic, value=f"committed{i}", partition=0)
    done.flush(10)
    done.commit_transaction(15)
    open_txn = txn(unique("tx-o"))
    open_txn.produce(topic, value="undecided", partition=0)
    open_txn.flush(10)
    from confluent_kafka import TopicPartition
    w = ck.consumer(broker, isolation_level="read_uncommitted")
    wait_until(lambda: w.get_watermark_offsets(TopicPartition(topic, 0), timeout=5,
                                               cached=False)[1] >= 8, 10, "8 offsets written")
    w.close()

    tid = topic_id_of(broker, topic)
    host, port = broker.bootstrap.split(":")
    with kwire.Conn(host, int(port)) as c:
        joined(c, committed, "rc", topic)
        err, parts = share_fetch(c, committed, "rc", 0, tid, 0, max_wait_ms=2000)
        assert err == 0
        # The markers are acquired (the client acknowledges them as gaps, as from Kafka);
        # the aborted data and the undecided record are not.
        assert acquired_offsets(parts) == [3, 4, 5, 6]
        err, parts = share_fetch(c, committed, "rc", 1, tid, 0, acks=[(3, 6, 1)])
        assert err == 0 and parts[0][2] == 0
        # Nothing more until the open transaction ends; then its record, never the
        # aborted ones.
        err, parts = share_fetch(c, committed, "rc", 2, tid, 0, max_wait_ms=500)
        assert acquired_offsets(parts) == []
        open_txn.commit_transaction(15)
        err, parts = share_fetch(c, committed, "rc", 3, tid, 0, max_wait_ms=3000)
        assert acquired_offsets(parts) == [7, 8]

        joined(c, uncommitted, "ru", topic)
        err, parts = share_fetch(c, uncommitted, "ru", 0, tid, 0, max_wait_ms=2000)
        assert acquired_offsets(parts) == list(range(9))


@pytest.mark.timeout_s(60)
def test_a_members_closing_acknowledgement_lands_after_it_left_the_group(start_broker):
    """librdkafka closes a share consumer by sending its leave heartbeat and its final
    ShareAcknowledge (epoch -1) side by side (0178): the acknowledgement lands even when
    the leave came first, as on Kafka, whose partition leaders keep a member's share
    session until it closes."""
    broker = start_broker()
    topic, group = share_topic(broker, partitions=1)
    produce(broker, topic, 5, partitions=1)
    tid = topic_id_of(broker, topic)
    host, port = broker.bootstrap.split(":")
    with kwire.Conn(host, int(port)) as c:
        joined(c, group, "m", topic)
        err, parts = share_fetch(c, group, "m", 0, tid, 0, max_wait_ms=2000)
        assert acquired_offsets(parts) == [0, 1, 2, 3, 4]
        assert heartbeat(c, group, "m", -1, None)[0] == 0
        err, parts = share_acknowledge(c, group, "m", -1, tid, 0, [(0, 4, 1)])
        assert (err, parts) == (0, [(0, 0)])
        # The session is closed now: the member is unknown here.
        assert share_acknowledge(c, group, "m", 1, tid, 0, [(0, 0, 1)])[0] == 25
        # Accepted: another member gets nothing.
        joined(c, group, "n", topic)
        err, parts = share_fetch(c, group, "n", 0, tid, 0, max_wait_ms=1000)
        assert acquired_offsets(parts) == []


@pytest.mark.timeout_s(60)
def test_members_of_a_share_group_split_its_partitions(start_broker):
    """Kafka's share SimpleAssignor: each member is hashed onto a partition and the rest
    go round-robin, so two members of a 4-partition topic each hold some, not every
    member all of them (librdkafka 0172's mixed-mode consumers both get records). No
    heartbeat carries a topic before its share-partitions are initialized for the group
    (Kafka's coordinator initializes them after the first subscribing heartbeat), so
    members that start together share the partitions out."""
    broker = start_broker()
    topic, group = share_topic(broker, partitions=4)
    tid = topic_id_of(broker, topic)
    host, port = broker.bootstrap.split(":")
    with kwire.Conn(host, int(port)) as c:
        err, ea, first = heartbeat_assigned(c, group, "member-a", 0, [topic])
        assert (err, first) == (0, {})
        err, eb, first = heartbeat_assigned(c, group, "member-b", 0, [topic])
        assert (err, first) == (0, {})
        time.sleep(0.5)  # the group timer completes the initialization (within 100 ms)
        err, ea, a = heartbeat_assigned(c, group, "member-a", ea, None)
        assert err == 0 and a[tid]
        err, eb, b = heartbeat_assigned(c, group, "member-b", eb, None)
        assert err == 0 and b[tid]
        held_a, held_b = set(a[tid]), set(b[tid])
        assert held_a | held_b == {0, 1, 2, 3}
        assert held_a != {0, 1, 2, 3} and held_b != {0, 1, 2, 3}, (held_a, held_b)


@pytest.mark.timeout_s(60)
def test_share_fetch_max_bytes_zero_gets_nothing_and_one_gets_one_batch(start_broker):
    """ShareFetch MaxBytes=0 acquires nothing (librdkafka's fetch.max.bytes=0, 0180);
    MaxBytes=1 is a soft limit: one whole batch."""
    broker = start_broker()
    topic, group = share_topic(broker, partitions=1)
    p = ck.producer(broker, linger_ms=0)
    for i in range(3):
        ck.produce_all(p, topic, [{"value": f"b{i}-{j}", "partition": 0} for j in range(2)])
    tid = topic_id_of(broker, topic)
    host, port = broker.bootstrap.split(":")
    with kwire.Conn(host, int(port)) as c:
        joined(c, group, "m", topic)
        err, parts = share_fetch(c, group, "m", 0, tid, 0, max_wait_ms=300, max_bytes=0)
        assert err == 0 and acquired_offsets(parts) == []
        err, parts = share_fetch(c, group, "m", 1, tid, 0, max_wait_ms=2000, max_bytes=1)
        assert acquired_offsets(parts) == [0, 1]
        err, parts = share_fetch(c, group, "m", 2, tid, 0, max_wait_ms=2000)
        assert acquired_offsets(parts) == [2, 3, 4, 5]


def describe_offsets(conn, group, topic=None, partitions=()):
    body = kwire.uvarint(2) + kwire.compact_string(group)
    if topic is None:
        body += kwire.uvarint(0)
    else:
        body += kwire.uvarint(2) + kwire.compact_string(topic)
        body += kwire.uvarint(len(partitions) + 1) + b"".join(struct.pack(">i", p) for p in partitions)
        body += kwire.uvarint(0)
    body += kwire.uvarint(0) + kwire.uvarint(0)
    r = conn.request(90, 0, body, header_version=2)
    read_header_tags(r)
    r.int32()
    r.uvarint()  # one group
    cstr(r)
    out = {}
    for _ in range(r.uvarint() - 1):
        name = cstr(r)
        r.take(16)
        for _ in range(r.uvarint() - 1):
            p, start, _epoch, err = r.int32(), r.int64(), r.int32(), r.int16()
            cstr(r)
            r.take(1)
            out[(name, p)] = (start, err)
        r.take(1)
    err = r.int16()
    cstr(r)
    return err, out


def alter_offsets(conn, group, topic, partition, start):
    body = kwire.compact_string(group) + kwire.uvarint(2) + kwire.compact_string(topic)
    body += kwire.uvarint(2) + struct.pack(">iq", partition, start) + kwire.uvarint(0)
    body += kwire.uvarint(0) + kwire.uvarint(0)
    r = conn.request(91, 0, body, header_version=2)
    err = top_level_error(r)
    perrs = []
    for _ in range(r.uvarint() - 1):
        cstr(r)
        r.take(16)
        for _ in range(r.uvarint() - 1):
            r.int32()
            perrs.append(r.int16())
            cstr(r)
            r.take(1)
        r.take(1)
    return err, perrs


def delete_offsets(conn, group, topic):
    body = kwire.compact_string(group) + kwire.uvarint(2) + kwire.compact_string(topic)
    body += kwire.uvarint(0) + kwire.uvarint(0)
    r = conn.request(92, 0, body, header_version=2)
    read_header_tags(r)
    r.int32()
    return r.int16()


@pytest.mark.timeout_s(60)
def test_share_group_offsets_are_described_altered_and_deleted(start_broker):
    broker = start_broker()
    topic, group = share_topic(broker, partitions=1)
    produce(broker, topic, 10, partitions=1)
    tid = topic_id_of(broker, topic)
    host, port = broker.bootstrap.split(":")
    with kwire.Conn(host, int(port)) as c:
        assert describe_offsets(c, "no-such-share-group")[0] == 69  # GROUP_ID_NOT_FOUND
        err, epoch = heartbeat(c, group, "m1", 0, [topic])
        assert err == 0
        share_fetch(c, group, "m1", 0, tid, 0, max_wait_ms=2000)
        share_fetch(c, group, "m1", 1, tid, 0, acks=[(0, 3, 1)])
        assert describe_offsets(c, group) == (0, {(topic, 0): (4, 0)})
        # A group with members: its offsets stay (Kafka's GROUP_NOT_EMPTY).
        assert alter_offsets(c, group, topic, 0, 8)[0] == 68
        assert heartbeat(c, group, "m1", -1, None)[0] == 0
        assert alter_offsets(c, group, topic, 0, 8) == (0, [0])
        assert describe_offsets(c, group, topic, [0]) == (0, {(topic, 0): (8, 0)})
    # The altered start is persisted: a restart keeps it.
    broker.restart()
    host, port = broker.bootstrap.split(":")
    with kwire.Conn(host, int(port)) as c:
        assert describe_offsets(c, group, topic, [0]) == (0, {(topic, 0): (8, 0)})
        assert heartbeat(c, group, "m2", 0, [topic])[0] == 0
        err, parts = share_fetch(c, group, "m2", 0, tid, 0, max_wait_ms=2000)
        assert parts[0][3] == [(8, 9, 1)]
        assert heartbeat(c, group, "m2", -1, None)[0] == 0
        assert delete_offsets(c, group, topic) == 0
        assert describe_offsets(c, group, topic, [0]) == (0, {(topic, 0): (-1, 0)})
        # Deleted: the next use starts from share.auto.offset.reset (earliest) again.
        assert heartbeat(c, group, "m3", 0, [topic])[0] == 0
        err, parts = share_fetch(c, group, "m3", 0, tid, 0, max_wait_ms=2000)
        assert parts[0][3] == [(0, 9, 1)]
    # ListGroups shows it as a share group: type and protocol type "share", as Kafka
    # lists one (raw v5: librdkafka's listing does not show the type).
    with kwire.Conn(host, int(port)) as c:
        assert list_groups_v5(c).get(group) == ("share", "share")
        # Only the share type when filtered by it.
        assert set(list_groups_v5(c, types=["share"]).values()) == {("share", "share")}


def list_groups_v5(conn, types=()):
    body = kwire.uvarint(1) + kwire.uvarint(len(types) + 1)
    body += b"".join(kwire.compact_string(t) for t in types) + kwire.uvarint(0)
    r = conn.request(16, 5, body, header_version=2)
    read_header_tags(r)
    r.int32()
    assert r.int16() == 0
    out = {}
    for _ in range(r.uvarint() - 1):
        gid, protocol, _state, kind = cstr(r), cstr(r), cstr(r), cstr(r)
        r.take(1)
        out[gid] = (protocol, kind)
    return out


@pytest.mark.timeout_s(60)
def test_metrics_show_members_start_offsets_and_in_flight_records(tmp_path):
    from test_http import HttpBroker, parse_metrics, call

    broker = HttpBroker(tmp_path / "b")
    broker.start()
    try:
        topic, group = share_topic(broker, partitions=1)
        produce(broker, topic, 5, partitions=1)
        tid = topic_id_of(broker, topic)
        host, port = broker.bootstrap.split(":")
        with kwire.Conn(host, int(port)) as c:
            assert heartbeat(c, group, "m1", 0, [topic])[0] == 0
            share_fetch(c, group, "m1", 0, tid, 0, max_wait_ms=2000)
            share_fetch(c, group, "m1", 1, tid, 0, acks=[(0, 1, 1)])
            _, _, body = call(broker, "/metrics")
        _, samples = parse_metrics(body.decode())
        got = {(n, l.get("partition")): v for n, l, v in samples if l.get("group") == group}
        assert got == {
            ("runnel_share_group_members", None): 1,
            ("runnel_share_partition_start_offset", "0"): 2,
            ("runnel_share_partition_in_flight_records", "0"): 3,
            ("runnel_share_partition_acquired_records", "0"): 3,
        }
    finally:
        broker.stop()


@pytest.mark.timeout_s(60)
def test_cli_lists_and_describes_share_groups(start_broker):
    from harness import runnel_bin

    broker = start_broker()
    topic, group = share_topic(broker, partitions=2)
    produce(broker, topic, 10)
    tid = topic_id_of(broker, topic)
    host, port = broker.bootstrap.split(":")

    def runnel(*args):
        r = subprocess.run([runnel_bin(), "groups", *args, "-b", broker.bootstrap],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        return r.stdout

    with kwire.Conn(host, int(port)) as c:
        err, epoch = heartbeat(c, group, "m1", 0, [topic])
        assert err == 0
        # The first heartbeat initializes the topic for the group; as on Kafka, its
        # partitions are assigned from a heartbeat after that completed.
        time.sleep(0.5)
        assert heartbeat(c, group, "m1", epoch, None)[0] == 0
        share_fetch(c, group, "m1", 0, tid, 0, max_wait_ms=2000)
        share_fetch(c, group, "m1", 1, tid, 0, acks=[(0, 1, 1)])
        listed = [json.loads(line) for line in runnel("list", "--json").splitlines()]
        assert {"group": group, "state": "Stable", "type": "share", "protocol_type": "share"} in listed
        d = json.loads(runnel("describe", group, "--json"))
        assert d["type"] == "share" and d["state"] == "Stable"
        assert [m["member_id"] for m in d["members"]] == ["m1"]
        assert d["members"][0]["assignment"] == [{"topic": topic, "partitions": [0, 1]}]
        # Partition 0 was read (start 2 after two accepts, log end 5); partition 1 not yet.
        parts = {p["partition"]: p for p in d["partitions"]}
        assert (parts[0]["committed_offset"], parts[0]["log_end_offset"], parts[0]["lag"]) == (2, 5, 3)
        assert parts[1]["committed_offset"] is None
        text = runnel("describe", group)
        assert "START-OFFSET" in text and "Type: share" in text


# ---------------------------------------------------------------- entry point

if __name__ == "__main__" and len(sys.argv) >= 3 and sys.argv[1] == "worker":
    worker_main(json.loads(sys.argv[2]))


def test_a_share_groups_id_is_refused_to_classic_and_consumer_group_members(start_broker):
    """Kafka: a group id held by a share group answers JoinGroup ("not a classic group")
    and ConsumerGroupHeartbeat ("not a consumer group") with GROUP_ID_NOT_FOUND."""
    broker = start_broker()
    topic, group = share_topic(broker, partitions=1)
    host, port = broker.bootstrap.split(":")
    with kwire.Conn(host, int(port)) as c:
        err, _ = heartbeat(c, group, "m1", 0, [topic])
        assert err == 0
        # JoinGroup v0: group, session timeout, member id, protocol type, protocols.
        body = kwire.string(group) + struct.pack(">i", 10000) + kwire.string("")
        body += kwire.string("consumer") + struct.pack(">i", 1) + kwire.string("range")
        body += struct.pack(">i", 0)
        r = c.request(11, 0, body)
        assert r.int16() == 69  # GROUP_ID_NOT_FOUND
        # ConsumerGroupHeartbeat v0 (flexible): group, member id, epoch, instance id,
        # rack, rebalance timeout, topics, server assignor, owned partitions.
        body = kwire.compact_string(group) + kwire.compact_string("c1") + struct.pack(">i", 0)
        body += kwire.compact_string(None) + kwire.compact_string(None) + struct.pack(">i", 30000)
        body += kwire.uvarint(2) + kwire.compact_string(topic)
        body += kwire.compact_string(None) + kwire.uvarint(0) + kwire.uvarint(0)
        r = c.request(68, 0, body, header_version=2)
        read_header_tags(r)
        r.int32()
        assert r.int16() == 69
