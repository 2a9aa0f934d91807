"""`runnel mirror` (crates/cli/src/tools/mirror.rs): MirrorMaker 2 compatible copying
between two single-node Runnel brokers, checked with confluent-kafka:

- matching topics copied under MM2's DefaultReplicationPolicy names (`src.TOPIC`), the
  others not, every record (key, value, headers, timestamp) in order per partition;
- Ctrl-C stops cleanly (exit 0), a restart resumes from the stored offsets: nothing
  missing, nothing twice, also when the target already holds records that a crashed
  run produced but did not record (the resume skips them), and after kill -9;
- checkpoints in `<alias>.checkpoints.internal` decoded from MM2's binary format, their
  downstream offsets pointing at the same records; heartbeats in `heartbeats`;
- aborted transactions not copied (read_committed); a source reached over SASL_SSL
  through `--source-config`;
- errors that name what is wrong: an unreachable source, a bad regex, a refused
  password.
"""

import signal
import struct
import subprocess
import threading
import time

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

import ck
from cluster import free_ports
from harness import runnel_bin, unique

FAST = ["--emit-checkpoints-interval", "0.3", "--emit-heartbeats-interval", "0.3",
        "--refresh-topics-interval", "0.5", "--progress-interval", "0.5"]


@pytest.fixture
def pair(start_broker):
    return start_broker({"http.listeners": ""}), start_broker({"http.listeners": ""})


class Mirror:
    """A `runnel mirror` process; stderr goes to a file read on failure."""

    def __init__(self, tmp_path, source, target, *args):
        self.log = tmp_path / f"mirror-{time.monotonic_ns()}.log"
        self.f = open(self.log, "wb")
        self.proc = subprocess.Popen(
            [runnel_bin(), "mirror", "--source", source.bootstrap, "--target", target.bootstrap,
             *FAST, *args], stdout=self.f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def text(self):
        return self.log.read_text(errors="replace")

    def stop(self, sig=signal.SIGINT, timeout=40):
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        self.f.close()
        return code

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.f.close()


@pytest.fixture
def mirrors():
    started = []
    yield started
    for m in started:
        m.kill()


def records(broker, topic, partition):
    return [(m.key(), m.value(), m.headers(), m.timestamp())
            for m in ck.consume(broker, topic, partition, start=OFFSET_BEGINNING, timeout=30,
                                isolation_level="read_uncommitted")]


def produce(broker, topic, n, partitions, start=0, size=0):
    p = ck.producer(broker)
    recs = [{"key": f"k{i}".encode(), "value": f"v{i}".encode().ljust(size, b"."),
             "headers": [("h", f"{i}".encode())],
             "timestamp": 1_700_000_000_000 + i, "partition": i % partitions}
            for i in range(start, start + n)]
    d = ck.produce_all(p, topic, recs)
    assert not d.failed, d.failed


def start_feeding(broker, topic, partitions, start):
    """Keeps producing to `topic` (30 chunks of 1,000 records of 1 KiB, keys from
    `start`) until the returned stop() is called, so that a mirror killed mid-stream is
    killed mid-stream however fast it copies. stop() returns whether it was still
    producing."""
    feeding = threading.Event()
    feeding.set()

    def feed():
        for chunk in range(30):
            if not feeding.is_set():
                return
            produce(broker, topic, 1000, partitions, start=start + chunk * 1000, size=1024)
            time.sleep(0.05)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()

    def stop():
        alive = feeder.is_alive()
        feeding.clear()
        feeder.join(60)
        return alive
    return stop


def end_offsets(broker, topic, partitions):
    return {p: ck.watermarks(broker, topic, p)[1] for p in range(partitions)}


def wait_copied(mirror, source, target, topic, remote, partitions, timeout=40):
    want = end_offsets(source, topic, partitions)
    deadline = time.monotonic() + timeout
    got = None
    while time.monotonic() < deadline:
        assert mirror.proc.poll() is None, f"mirror exited {mirror.proc.returncode}:\n{mirror.text()}"
        try:
            got = end_offsets(target, remote, partitions)
        except Exception:  # the remote topic may not exist yet
            got = None
        if got == want:
            return
        time.sleep(0.3)
    raise AssertionError(f"{remote} on the target: {got}, source {topic}: {want}\n{mirror.text()}")


def assert_same(source, target, topic, remote, partitions):
    for p in range(partitions):
        a, b = records(source, topic, p), records(target, remote, p)
        assert len(b) == len(a) and b == a, (
            f"{remote}[{p}]: {len(b)} records on the target, {len(a)} on the source; "
            f"first difference at {next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)}")


def read_str(buf, at):
    (n,) = struct.unpack_from(">h", buf, at)
    return buf[at + 2:at + 2 + n].decode(), at + 2 + n


def decode_checkpoint(key, value):
    """MM2's Checkpoint: key {group, topic, partition}; value int16 version 0, then
    {upstreamOffset int64, offset int64, metadata string}."""
    group, at = read_str(key, 0)
    topic, at = read_str(key, at)
    (partition,) = struct.unpack_from(">i", key, at)
    version, upstream, downstream = struct.unpack_from(">hqq", value, 0)
    metadata, end = read_str(value, 18)
    assert version == 0 and end == len(value) and at + 4 == len(key)
    return (group, topic, partition), (upstream, downstream, metadata)


def checkpoints(target, alias):
    out = {}
    for m in ck.consume(target, f"{alias}.checkpoints.internal", 0, start=OFFSET_BEGINNING, timeout=20):
        k, v = decode_checkpoint(m.key(), m.value())
        out[k] = v
    return out


def commit(broker, group, topic, offsets):
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group, **ck.QUIET})
    try:
        c.commit(offsets=[TopicPartition(topic, p, o) for p, o in offsets.items()], asynchronous=False)
    finally:
        c.close()


@pytest.mark.timeout_s(180)
def test_copies_renamed_resumes_without_duplicates_and_checkpoints(pair, tmp_path, mirrors):
    source, target = pair
    topic, other = unique("orders"), unique("other")
    ck.create_topic(source, topic, partitions=3)
    ck.create_topic(source, other, partitions=1)
    produce(source, topic, 300, 3)
    produce(source, other, 5, 1)
    group = unique("g")
    commit(source, group, topic, {0: 40, 1: 0, 2: 100})
    remote = f"src.{topic}"

    m = Mirror(tmp_path, source, target, "--topics", "orders-.*", "--source-alias", "src",
               "--groups", "g-.*")
    mirrors.append(m)
    wait_copied(m, source, target, topic, remote, 3)
    assert_same(source, target, topic, remote, 3)
    assert m.stop() == 0, m.text()
    out = m.text()
    assert "stopped" in out and "records" in out, out
    names = ck.admin(target).list_topics(timeout=10).topics
    assert other not in names and f"src.{other}" not in names
    assert "src.checkpoints.internal" in names and "heartbeats" in names
    assert "mm2-offset-syncs.src.internal" in names and "mm2-offsets.target.internal" in names

    # Checkpoints: MM2's format; each downstream offset holds the record the group
    # would read next on the source.
    cps = checkpoints(target, "src")
    for p, upstream in {0: 40, 1: 0, 2: 100}.items():
        up, down, _ = cps[(group, remote, p)]
        assert up == upstream, cps
        src_next = records(source, topic, p)[upstream:upstream + 1]
        tgt_next = records(target, remote, p)[down:down + 1]
        assert src_next == tgt_next, (p, up, down)
    # Heartbeats: key {sourceClusterAlias, targetClusterAlias}, value version 0 + timestamp.
    hb = ck.consume(target, "heartbeats", 0, start=OFFSET_BEGINNING, timeout=20)
    assert hb
    alias, at = read_str(hb[-1].key(), 0)
    assert (alias, read_str(hb[-1].key(), at)[0]) == ("src", "target")
    version, ts = struct.unpack(">hq", hb[-1].value())
    assert version == 0 and abs(ts / 1000 - time.time()) < 120

    # A crashed run may have produced records it did not record as copied: put copies
    # of the next source records on the target by hand, then resume; they are skipped.
    produce(source, topic, 90, 3, start=300)
    p = ck.producer(target)
    pending = [m for m in ck.consume(source, topic, 0, start=100, timeout=20)][:7]
    ck.produce_all(p, remote, [{"key": r.key(), "value": r.value(), "headers": r.headers(),
                                "timestamp": r.timestamp()[1]} for r in pending], partition=0)
    m = Mirror(tmp_path, source, target, "--topics", "orders-.*", "--source-alias", "src")
    mirrors.append(m)
    wait_copied(m, source, target, topic, remote, 3)
    assert_same(source, target, topic, remote, 3)

    # kill -9 mid-stream (the target holds part of the new records), then resume.
    # The source keeps growing while the mirror copies (chunks of 1,000 records), so the
    # kill lands mid-stream however fast the mirror is.
    before = sum(end_offsets(target, remote, 3).values())
    stop_feeding = start_feeding(source, topic, 3, 390)
    deadline = time.monotonic() + 30
    while sum(end_offsets(target, remote, 3).values()) < before + 2000:
        assert time.monotonic() < deadline and m.proc.poll() is None, m.text()
        time.sleep(0.02)
    m.kill()
    at_kill = sum(end_offsets(target, remote, 3).values())
    still_feeding = stop_feeding()
    total = sum(end_offsets(source, topic, 3).values())
    assert still_feeding or at_kill < total, "the mirror finished before the kill"
    m = Mirror(tmp_path, source, target, "--topics", "orders-.*", "--source-alias", "src")
    mirrors.append(m)
    wait_copied(m, source, target, topic, remote, 3)
    assert_same(source, target, topic, remote, 3)

    # Checkpoints after restarts, translated through the stored offset syncs (MM2's rule:
    # the nearest sync at or before the group's offset, + 1 past it): never past the
    # record the group reads next; a group at the end fails over at the end; a group far
    # behind (partition 1, early in the log) still gets one. The offsets are inside the
    # log however early the kill above landed (the source holds >= 796 per partition).
    ends = end_offsets(source, topic, 3)
    group2 = unique("g")
    behind = {0: ends[0], 1: 5, 2: ends[2] // 2}
    commit(source, group2, topic, behind)
    deadline = time.monotonic() + 45
    while not all((group2, remote, p) in checkpoints(target, "src") for p in range(3)):
        assert time.monotonic() < deadline, (checkpoints(target, "src"), m.text())
        time.sleep(0.3)
    assert m.stop(signal.SIGTERM) == 0, m.text()
    cps_end = checkpoints(target, "src")
    syncs = [decode_offset_sync(r.key(), r.value())
             for r in ck.consume(target, "mm2-offset-syncs.src.internal", 0, start=OFFSET_BEGINNING, timeout=20)]
    assert cps_end[(group2, remote, 0)][:2] == (ends[0], ends[0]), cps_end[(group2, remote, 0)]
    for p in (1, 2):
        up, down, _ = cps_end[(group2, remote, p)]
        # Source and target offsets coincide here; this run's own copies translate
        # exactly, older ones through the syncs as MM2 does.
        assert up == behind[p] and mm2_translate(syncs, topic, p, up) <= down <= up, (p, up, down)
    assert cps_end[(group2, remote, 1)][1] == mm2_translate(syncs, topic, 1, 5)
    # The first group's exact checkpoints were not moved back by the restarts (MM2 keeps
    # its last checkpoints across restarts and never emits a downstream rewind).
    for p in range(3):
        assert cps_end[(group, remote, p)] == cps[(group, remote, p)], (p, cps_end, cps)


def mm2_translate(syncs, topic, partition, upstream):
    """MM2's OffsetSyncStore.translateDownstream over every stored sync of a partition."""
    before = [(u, d) for (t, p), (u, d) in syncs if (t, p) == (topic, partition) and u <= upstream]
    assert before, (topic, partition, upstream, syncs)
    u, d = max(before)
    return d + (0 if u == upstream else 1)


@pytest.mark.timeout_s(60)
def test_identity_policy_keeps_names(pair, tmp_path, mirrors):
    source, target = pair
    topic = unique("same")
    ck.create_topic(source, topic, partitions=2)
    produce(source, topic, 40, 2)
    m = Mirror(tmp_path, source, target, "--topics", topic, "--replication-policy", "identity")
    mirrors.append(m)
    wait_copied(m, source, target, topic, topic, 2)
    assert_same(source, target, topic, topic, 2)
    assert m.stop() == 0


def run_mirror(*args, timeout=30):
    return subprocess.run([runnel_bin(), "mirror", *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.timeout_s(60)
def test_errors_name_what_is_wrong(pair):
    source, target = pair
    closed = free_ports(1)[0]
    r = run_mirror("--source", f"127.0.0.1:{closed}", "--target", target.bootstrap, "--timeout", "2")
    assert r.returncode == 1, r
    assert "source" in r.stderr and f"127.0.0.1:{closed}" in r.stderr, r.stderr
    r = run_mirror("--source", source.bootstrap, "--target", f"127.0.0.1:{closed}", "--timeout", "2")
    assert r.returncode == 1 and "target" in r.stderr, r.stderr
    r = run_mirror("--source", source.bootstrap, "--target", target.bootstrap, "--topics", "orders(")
    assert r.returncode == 2 and "--topics" in r.stderr and "orders(" in r.stderr, r.stderr
    r = run_mirror("--source", source.bootstrap, "--target", target.bootstrap,
                   "--replication-policy", "mine")
    assert r.returncode == 2 and "replication-policy" in r.stderr, r.stderr


def committed_records(broker, topic, partition):
    return [(m.key(), m.value()) for m in ck.consume(broker, topic, partition, start=OFFSET_BEGINNING,
                                                     timeout=30, isolation_level="read_committed")]


@pytest.mark.timeout_s(90)
def test_aborted_transactions_are_not_copied(pair, tmp_path, mirrors):
    source, target = pair
    topic = unique("txn")
    ck.create_topic(source, topic, partitions=1)
    tp = ck.producer(source, {"transactional.id": unique("tid")})
    tp.init_transactions(15)
    for i, commit_it in enumerate([True, False, True]):
        tp.begin_transaction()
        for j in range(10):
            tp.produce(topic, f"t{i}-{j}".encode(), key=f"{i}".encode(), partition=0)
        tp.flush(15)
        tp.commit_transaction(15) if commit_it else tp.abort_transaction(15)
    produce(source, topic, 5, 1)
    want = committed_records(source, topic, 0)
    assert len(want) == 25
    m = Mirror(tmp_path, source, target, "--topics", topic)
    mirrors.append(m)
    remote = f"source.{topic}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if ck.watermarks(target, remote, 0)[1] >= 25:
                break
        except Exception:
            pass
        assert time.monotonic() < deadline and m.proc.poll() is None, m.text()
        time.sleep(0.3)
    time.sleep(1)  # nothing more arrives
    assert ck.watermarks(target, remote, 0)[1] == 25
    assert committed_records(target, remote, 0) == want
    assert m.stop() == 0


@pytest.mark.timeout_s(90)
def test_source_over_sasl_ssl(start_broker, tmp_path, mirrors):
    from test_mirror import start_sasl_ssl_source
    source, secure, certs = start_sasl_ssl_source(start_broker, tmp_path)
    target = start_broker({"http.listeners": ""})
    topic = unique("sec")
    ck.create_topic(source, topic, partitions=2)
    produce(source, topic, 30, 2)

    def config(password):
        path = tmp_path / f"source-{password}.properties"
        path.write_text("security.protocol=SASL_SSL\nsasl.mechanism=PLAIN\nsasl.username=alice\n"
                        f"sasl.password={password}\nssl.truststore.location={certs['ca']}\n")
        return str(path)

    secured = type("Secured", (), {"bootstrap": f"127.0.0.1:{secure}"})()
    r = run_mirror("--source", secured.bootstrap, "--target", target.bootstrap,
                   "--source-config", config("wrong"), "--timeout", "5")
    assert r.returncode == 1 and "source" in r.stderr and "uthentication" in r.stderr, r.stderr
    m = Mirror(tmp_path, secured, target, "--topics", topic, "--source-config", config("alice-secret"))
    mirrors.append(m)
    wait_copied(m, source, target, topic, f"source.{topic}", 2)
    assert_same(source, target, topic, f"source.{topic}", 2)
    assert m.stop() == 0


def target_committed(broker, group, topic, partitions):
    """`group`'s committed offsets (None where it has none), read from outside the group."""
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group, **ck.QUIET})
    try:
        got = c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        return {tp.partition: (tp.offset if tp.offset >= 0 else None) for tp in got}
    finally:
        c.close()


@pytest.mark.timeout_s(90)
def test_sync_group_offsets_commits_translated_offsets_of_idle_groups(pair, tmp_path, mirrors):
    """--sync-group-offsets (MM2's sync.group.offsets.enabled): the translated offsets
    are committed in the target's groups, not for a group with members there, and never
    moving a group back."""
    source, target = pair
    topic = unique("sync")
    remote = f"src.{topic}"
    ck.create_topic(source, topic, partitions=2)
    produce(source, topic, 40, 2)
    # 5 records already on the target's partition 0: target offsets there are source + 5.
    ck.create_topic(target, remote, partitions=2)
    ck.produce_all(ck.producer(target), remote, [{"value": b"before"}] * 5, partition=0)
    idle, behind_ahead, active = unique("g"), unique("g"), unique("g")
    for g in (idle, behind_ahead, active):
        commit(source, g, topic, {0: 10, 1: 7})
    commit(target, behind_ahead, remote, {0: 19})  # ahead of the translated 15 on partition 0
    member = Consumer({"bootstrap.servers": target.bootstrap, "group.id": active,
                       "enable.auto.commit": False, **ck.QUIET})
    member.subscribe([remote])
    deadline = time.monotonic() + 20
    while not member.assignment():
        assert time.monotonic() < deadline, "no assignment on the target"
        member.poll(0.2)
    try:
        m = Mirror(tmp_path, source, target, "--topics", topic, "--source-alias", "src",
                   "--groups", "g-.*", "--sync-group-offsets")
        mirrors.append(m)
        deadline = time.monotonic() + 30
        while (target_committed(target, idle, remote, 2) != {0: 15, 1: 7}
               or end_offsets(target, remote, 2) != {0: 25, 1: 20}):
            assert time.monotonic() < deadline and m.proc.poll() is None, (
                target_committed(target, idle, remote, 2), end_offsets(target, remote, 2), m.text())
            time.sleep(0.3)
        assert target_committed(target, behind_ahead, remote, 2) == {0: 19, 1: 7}
        member.poll(0.5)  # still a member while the mirror has checkpointed several times
        assert target_committed(target, active, remote, 2) == {0: None, 1: None}
        assert m.stop() == 0, m.text()
        assert "group offsets synced" in m.text()
    finally:
        member.close()


def decode_offset_sync(key, value):
    """MM2's OffsetSync: key {topic, partition}; value {upstreamOffset, offset} (int64s)."""
    topic, at = read_str(key, 0)
    (partition,) = struct.unpack_from(">i", key, at)
    return (topic, partition), struct.unpack(">qq", value)


@pytest.mark.timeout_s(90)
def test_offset_syncs_on_the_source_as_mm2_names_them(pair, tmp_path, mirrors):
    """--offset-syncs-topic-location source (MM2's default location): the syncs go to
    mm2-offset-syncs.<target alias>.internal on the source, none on the target, and a
    restart resumes from them without copying anything twice."""
    source, target = pair
    topic = unique("loc")
    remote = f"src.{topic}"
    ck.create_topic(source, topic, partitions=1)
    produce(source, topic, 30, 1)
    args = ("--topics", topic, "--source-alias", "src", "--target-alias", "dr",
            "--offset-syncs-topic-location", "source")
    m = Mirror(tmp_path, source, target, *args)
    mirrors.append(m)
    wait_copied(m, source, target, topic, remote, 1)
    assert m.stop() == 0, m.text()
    on_source = ck.admin(source).list_topics(timeout=10).topics
    on_target = ck.admin(target).list_topics(timeout=10).topics
    assert "mm2-offset-syncs.dr.internal" in on_source
    assert not [t for t in on_target if t.startswith("mm2-offset-syncs")], list(on_target)
    syncs = [decode_offset_sync(r.key(), r.value())
             for r in ck.consume(source, "mm2-offset-syncs.dr.internal", 0, start=OFFSET_BEGINNING, timeout=20)]
    assert ((topic, 0), (29, 29)) in syncs, syncs
    produce(source, topic, 10, 1, start=30)
    m = Mirror(tmp_path, source, target, *args)
    mirrors.append(m)
    wait_copied(m, source, target, topic, remote, 1)
    assert_same(source, target, topic, remote, 1)
    assert m.stop() == 0, m.text()
    r = run_mirror("--source", source.bootstrap, "--target", target.bootstrap,
                   "--offset-syncs-topic-location", "elsewhere")
    assert r.returncode == 2 and "--offset-syncs-topic-location" in r.stderr, r.stderr


def committed_values(broker, topic, partition):
    return [(m.key(), m.value(), m.headers(), m.timestamp())
            for m in ck.consume(broker, topic, partition, start=OFFSET_BEGINNING, timeout=30,
                                isolation_level="read_committed")]


@pytest.mark.timeout_s(150)
def test_exactly_once_through_transactions_survives_kill9(pair, tmp_path, mirrors):
    """--exactly-once (MM2's exactly.once.support): batches and their progress record
    commit together on the target; after kill -9 mid-stream and a restart (which fences
    the old transactional id and aborts its open transaction), read_committed readers of
    the target see every source record exactly once."""
    source, target = pair
    topic = unique("eos")
    remote = f"src.{topic}"
    ck.create_topic(source, topic, partitions=2)
    produce(source, topic, 2000, 2, size=1024)
    args = ("--topics", topic, "--source-alias", "src", "--exactly-once")
    m = Mirror(tmp_path, source, target, *args)
    mirrors.append(m)
    stop_feeding = start_feeding(source, topic, 2, 2000)
    deadline = time.monotonic() + 40
    while True:
        try:
            got = sum(end_offsets(target, remote, 2).values())
        except Exception:  # the remote topic may not exist yet
            got = 0
        if got >= 2000:
            break
        assert time.monotonic() < deadline and m.proc.poll() is None, m.text()
        time.sleep(0.02)
    m.kill()
    # The target holds transaction markers (so its ends exceed the record count).
    at_kill = sum(end_offsets(target, remote, 2).values())
    still_feeding = stop_feeding()
    total = sum(end_offsets(source, topic, 2).values())
    assert still_feeding or at_kill < total + 2, "the mirror finished before the kill"
    m = Mirror(tmp_path, source, target, *args)
    mirrors.append(m)
    deadline = time.monotonic() + 90
    while sum(len(committed_values(target, remote, p)) for p in range(2)) < total:
        assert time.monotonic() < deadline and m.proc.poll() is None, m.text()
        time.sleep(0.5)
    assert m.stop() == 0, m.text()
    for p in range(2):
        a, b = records(source, topic, p), committed_values(target, remote, p)
        assert b == a, f"{remote}[{p}]: {len(b)} committed records on the target, {len(a)} on the source"
    assert sum(end_offsets(target, remote, 2).values()) > total, "no transaction markers on the target"
