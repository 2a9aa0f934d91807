"""Cluster links and mirror topics (crates/broker/src/mirror, docs/mirroring.md) between
two single-node Runnel processes, a source and a target, with real clients:

- records identical at identical offsets (offset, key, value, headers, timestamp) on a
  multi-partition topic, with partitions added on the source, a new source topic picked
  up, topic configs synced, the source's DeleteRecords followed;
- a compacted topic and a transactional topic with an aborted transaction (read_committed
  and read_uncommitted results equal on both sides);
- produce to a mirror topic refused (INVALID_REQUEST naming the link);
- group offsets synced, never over a group active on the target, and a group failing over
  after `promote` reads every record exactly once (confluent-kafka and kafka-python);
- kill -9 of the target mid-stream, then restart: nothing missing or duplicated;
- the source unreachable, then back on the same port: the link says so once, and resumes;
- a source reached through SASL_SSL, its secrets never shown back, a wrong password
  reported.

`runnel links` (the CLI) drives every link change; `links describe --json` is polled
for progress.
"""

import json
import os
import struct
import subprocess
import threading
import time
import urllib.request

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import ConfigResource, NewPartitions, NewTopic

import ck
import kwire
from cluster import free_ports
from harness import Broker, runnel_bin, unique
from test_http import HttpBroker

FAST = ["--set", "metadata.max.age.ms=300", "--set", "consumer.offset.sync.ms=300",
        "--set", "topic.config.sync.ms=300", "--set", "reconnect.backoff.max.ms=1000"]
GROUPS = {"group.initial.rebalance.delay.ms": 0}


def links(target, *args, check=True, timeout=30):
    r = subprocess.run([runnel_bin(), "links", *args, "-b", target.bootstrap],
                       capture_output=True, text=True, timeout=timeout)
    if check:
        assert r.returncode == 0, f"runnel links {' '.join(args)}: {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r


def describe(target, name):
    return json.loads(links(target, "describe", name, "--json").stdout)


def create_link(target, source, name, *extra):
    links(target, "create", name, "--source", source.bootstrap, *FAST, *extra)


def high_watermark(broker, topic, partition):
    c = ck.consumer(broker, isolation_level="read_uncommitted")
    try:
        return c.get_watermark_offsets(TopicPartition(topic, partition), timeout=10, cached=False)[1]
    finally:
        c.close()


def source_ends(broker, topic, partitions):
    """The source's high watermarks (not the last stable offsets)."""
    return {p: high_watermark(broker, topic, p) for p in range(partitions)}


def wait_mirrored(target, name, topic, ends, timeout=40):
    """Until every partition of `topic` on the target has `ends[p]` mirrored."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        d = describe(target, name)
        t = next((t for t in d["topics"] if t["topic"] == topic), None)
        if t is not None:
            got = {p["partition"]: p["mirrored_offset"] for p in t["partitions"]}
            last = got
            if all(got.get(p) == e for p, e in ends.items()):
                return d
        time.sleep(0.3)
    raise AssertionError(f"{topic} not mirrored to {ends} in {timeout}s; last {last}; "
                         f"describe: {json.dumps(describe(target, name))}")


def records(broker, topic, partition, isolation="read_uncommitted"):
    return [(m.offset(), m.key(), m.value(), m.headers(), m.timestamp())
            for m in ck.consume(broker, topic, partition, start=OFFSET_BEGINNING, timeout=30,
                                isolation_level=isolation)]


def assert_identical(source, target, topic, partitions, isolation="read_uncommitted"):
    for p in range(partitions):
        a = records(source, topic, p, isolation)
        b = records(target, topic, p, isolation)
        assert a == b, f"{topic}[{p}] differs ({isolation}): source {len(a)} records, target {len(b)}"
        assert len(a) > 0


def produce_keyed(broker, topic, n, partitions, start=0, **kw):
    p = ck.producer(broker, **kw)
    recs = [{"key": f"k{i}".encode(), "value": f"v{i}".encode(),
             "headers": [("h", f"{i}".encode())], "timestamp": 1_700_000_000_000 + i,
             "partition": i % partitions} for i in range(start, start + n)]
    d = ck.produce_all(p, topic, recs)
    assert not d.failed, d.failed
    return d


@pytest.fixture
def pair(start_broker):
    """(source, target): two single-node brokers; the source on a fixed port (so that it
    can come back where the link looks for it)."""
    port = free_ports(1)[0]
    source = start_broker({"listeners": f"PLAINTEXT://127.0.0.1:{port}",
                           "http.listeners": "", **GROUPS})
    target = start_broker({"http.listeners": "", **GROUPS})
    return source, target


@pytest.mark.timeout_s(150)
def test_records_identical_at_identical_offsets(pair):
    source, target = pair
    topic = unique("orders")
    a = ck.admin(source)
    a.create_topics([NewTopic(topic, 3, 1, config={"retention.ms": "86400000"})])[topic].result(15)
    ck.wait_for_topic(a, topic, 3)
    produce_keyed(source, topic, 300, 3, compression_type="lz4", linger_ms=20)
    create_link(target, source, "dr", "--topics", topic.split("-")[0] + ".*")
    wait_mirrored(target, "dr", topic, source_ends(source, topic, 3))
    assert_identical(source, target, topic, 3)

    # Synced topic configs.
    ta = ck.admin(target)
    cfg = list(ta.describe_configs([ConfigResource("topic", topic)]).values())[0].result(10)
    assert cfg["retention.ms"].value == "86400000"

    # Read-only until promoted.
    p = ck.producer(target, retries=0)
    d = ck.Delivery()
    p.produce(topic, b"nope", partition=0, on_delivery=d)
    p.flush(15)
    assert len(d.failed) == 1 and not d.ok
    err = d.failed[0][0]
    assert err.code() == KafkaError.INVALID_REQUEST, err
    # The CLI shows the link and lag 0.
    out = links(target, "describe", "dr").stdout
    assert topic in out and "MIRRORING" in out
    assert "dr" in links(target, "list").stdout

    # Partitions added on the source, a new matching topic, and more records.
    a.create_partitions([NewPartitions(topic, 4)])[topic].result(15)
    ck.wait_for_topic(a, topic, 4)
    produce_keyed(source, topic, 100, 4, start=300)
    later = topic.split("-")[0] + "-" + unique("late")
    ck.create_topic(source, later, partitions=2)
    produce_keyed(source, later, 20, 2)
    wait_mirrored(target, "dr", topic, source_ends(source, topic, 4))
    wait_mirrored(target, "dr", later, source_ends(source, later, 2))
    assert_identical(source, target, topic, 4)
    assert_identical(source, target, later, 2)

    # DeleteRecords on the source moves the mirror's log start too.
    subprocess.run([runnel_bin(), "records", "delete", "--topic", topic, "--partition", "0",
                    "--before", "50", "-b", source.bootstrap], check=True, capture_output=True, timeout=30)
    produce_keyed(source, topic, 4, 4, start=400)
    wait_mirrored(target, "dr", topic, source_ends(source, topic, 4))
    deadline = time.monotonic() + 20
    while ck.watermarks(target, topic, 0)[0] != 50:
        assert time.monotonic() < deadline, ck.watermarks(target, topic, 0)
        time.sleep(0.2)
    assert_identical(source, target, topic, 4)


@pytest.mark.timeout_s(150)
def test_compacted_and_transactional_topics(start_broker):
    source = start_broker({"http.listeners": "", "log.cleaner.backoff.ms": 200,
                           "transaction.abort.timed.out.transaction.cleanup.interval.ms": 200})
    target = start_broker({"http.listeners": ""})
    compacted, txn = unique("cmp"), unique("txn")
    a = ck.admin(source)
    fs = a.create_topics([NewTopic(compacted, 1, 1, config={"cleanup.policy": "compact",
                                                            "segment.bytes": "4096",
                                                            "min.cleanable.dirty.ratio": "0.01"}),
                          NewTopic(txn, 2, 1)])
    for f in fs.values():
        f.result(15)
    ck.wait_for_topic(a, compacted, 1)
    p = ck.producer(source)
    for chunk in range(40):  # small batches, so that segments roll between them
        recs = [{"key": f"k{i % 10}".encode(), "value": f"v{i}".encode() * 20}
                for i in range(chunk * 10, chunk * 10 + 10)]
        ck.produce_all(p, compacted, recs, partition=0)
    # Let the source's cleaner compact, so the log has offset gaps.
    deadline = time.monotonic() + 20
    while len(records(source, compacted, 0)) >= 400:
        assert time.monotonic() < deadline, "the source never compacted"
        time.sleep(0.5)

    tp = ck.producer(source, {"transactional.id": unique("tid")})
    tp.init_transactions(15)
    for i, commit in enumerate([True, False, True, False, True]):
        tp.begin_transaction()
        for j in range(10):
            tp.produce(txn, f"t{i}-{j}".encode(), partition=j % 2)
        tp.flush(15)
        tp.commit_transaction(15) if commit else tp.abort_transaction(15)
    # An open transaction at the end: the last stable offset must match too.
    tp.begin_transaction()
    tp.produce(txn, b"open", partition=0)
    tp.flush(15)

    create_link(target, source, "tx", "--topics", f"{compacted}|{txn}")
    wait_mirrored(target, "tx", compacted, source_ends(source, compacted, 1))
    wait_mirrored(target, "tx", txn, source_ends(source, txn, 2))
    assert_identical(source, target, compacted, 1)
    assert_identical(source, target, txn, 2)
    tp.commit_transaction(15)
    wait_mirrored(target, "tx", txn, source_ends(source, txn, 2))
    for iso in ("read_committed", "read_uncommitted"):
        assert_identical(source, target, txn, 2, isolation=iso)
    committed = [r[2] for p in range(2) for r in records(target, txn, p, "read_committed")]
    assert len(committed) == 31 and not any(v.startswith(b"t1-") or v.startswith(b"t3-") for v in committed)


def committed(broker, group, topic, partitions):
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group, **ck.QUIET})
    try:
        got = c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        return {t.partition: t.offset for t in got}
    finally:
        c.close()


def consume_group(broker, group, topic, expect, timeout=40):
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group,
                  "auto.offset.reset": "earliest", "enable.auto.commit": False, **ck.QUIET})
    got = []
    try:
        c.subscribe([topic])
        deadline = time.monotonic() + timeout
        while len(got) < expect and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is None or m.error():
                continue
            got.append(m.value())
        # Nothing more arrives.
        end = time.monotonic() + 1.5
        while time.monotonic() < end:
            m = c.poll(0.3)
            if m is not None and not m.error():
                got.append(m.value())
        c.commit(asynchronous=False)
    finally:
        c.close()
    return got


@pytest.mark.timeout_s(180)
def test_group_offsets_sync_and_failover_reads_everything_once(pair):
    source, target = pair
    topic = unique("pay")
    ck.create_topic(source, topic, partitions=2)
    produce_keyed(source, topic, 100, 2)
    first = consume_group(source, "billing", topic, 100)
    assert len(first) == 100
    create_link(target, source, "fo", "--topics", topic, "--groups", "bill.*")
    produce_keyed(source, topic, 60, 2, start=100)
    ends = source_ends(source, topic, 2)
    wait_mirrored(target, "fo", topic, ends)
    src = committed(source, "billing", topic, 2)
    deadline = time.monotonic() + 20
    while committed(target, "billing", topic, 2) != src:
        assert time.monotonic() < deadline, (committed(target, "billing", topic, 2), src)
        time.sleep(0.3)

    # A group consuming on the target is never overwritten by the sync.
    busy = Consumer({"bootstrap.servers": target.bootstrap, "group.id": "billing-live",
                     "auto.offset.reset": "earliest", "enable.auto.commit": False, **ck.QUIET})
    busy.subscribe([topic])
    n = 0
    deadline = time.monotonic() + 20
    while n < 10 and time.monotonic() < deadline:
        m = busy.poll(0.5)
        if m is not None and not m.error():
            n += 1
    busy.commit(asynchronous=False)
    mine = committed(target, "billing-live", topic, 2)
    consume_group(source, "billing-live", topic, 160)  # the source's copy moves far ahead
    time.sleep(2)
    busy.poll(0.1)
    assert committed(target, "billing-live", topic, 2) == mine
    busy.close()
    d = describe(target, "fo")
    assert d["state"] == "ACTIVE"

    # Fail over: promote, then the group reads the rest on the target exactly once.
    links(target, "promote", "fo", "--topic", topic)
    rest = consume_group(target, "billing", topic, 60)
    assert sorted(first + rest) == sorted(f"v{i}".encode() for i in range(160))
    # Promoted: writable, at the next offset.
    d = ck.produce_all(ck.producer(target), topic, [{"value": b"after", "partition": 0}])
    assert d.ok[0][1] == ends[0]
    assert describe(target, "fo")["topics"][0]["state"] == "PROMOTED"


@pytest.mark.timeout_s(120)
def test_promote_catches_up_and_syncs_offsets_first_kafka_python(pair):
    """`promote` (here through `links delete`) right after the source moved on: it waits
    for the mirror to reach the source's end and syncs the group's offsets once more, so
    a kafka-python group failing over reads exactly what it had not read."""
    kafka = pytest.importorskip("kafka")
    source, target = pair
    topic = unique("kp")
    ck.create_topic(source, topic, partitions=1)
    produce_keyed(source, topic, 50, 1)
    # Slow periodic syncs: only the promote's own sync can get the offsets there in time.
    links(target, "create", "kp", "--source", source.bootstrap, "--topics", topic,
          "--set", "metadata.max.age.ms=300", "--set", "consumer.offset.sync.ms=600000")
    deadline = time.monotonic() + 20
    while not describe(target, "kp")["topics"]:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    c = kafka.KafkaConsumer(topic, bootstrap_servers=source.bootstrap, group_id="kp-group",
                            auto_offset_reset="earliest", enable_auto_commit=False,
                            consumer_timeout_ms=3000)
    first = []
    for m in c:
        first.append(m.value)
        if len(first) == 30:
            break
    c.commit()
    c.close()
    produce_keyed(source, topic, 200, 1, start=50)
    links(target, "delete", "kp")  # deleting a link promotes its topics
    c = kafka.KafkaConsumer(topic, bootstrap_servers=target.bootstrap, group_id="kp-group",
                            auto_offset_reset="earliest", enable_auto_commit=False,
                            consumer_timeout_ms=3000)
    rest = [m.value for m in c]
    c.close()
    assert first + rest == [f"v{i}".encode() for i in range(250)]
    assert "kp" not in links(target, "list").stdout.split()


@pytest.mark.timeout_s(180)
def test_kill9_target_mid_stream(pair):
    source, target = pair
    topic = unique("stream")
    ck.create_topic(source, topic, partitions=2)
    create_link(target, source, "ks", "--topics", topic)
    stop = threading.Event()
    produced = []

    def produce():
        p = ck.producer(source, enable_idempotence=True)
        i = 0
        while not stop.is_set():
            p.produce(topic, f"v{i}".encode(), key=f"k{i}".encode(), partition=i % 2)
            i += 1
            if i % 50 == 0:
                p.flush(10)
                time.sleep(0.02)
        p.flush(20)
        produced.append(i)

    t = threading.Thread(target=produce, daemon=True)
    t.start()
    time.sleep(3)
    target.kill9()
    time.sleep(1)
    target.start()
    time.sleep(2)
    stop.set()
    t.join(30)
    assert produced and produced[0] > 100
    wait_mirrored(target, "ks", topic, source_ends(source, topic, 2), timeout=60)
    assert_identical(source, target, topic, 2)
    total = sum(len(records(target, topic, p)) for p in range(2))
    assert total == produced[0]


@pytest.mark.timeout_s(180)
def test_source_unreachable_then_back(start_broker):
    port = free_ports(1)[0]
    source = start_broker({"listeners": f"PLAINTEXT://127.0.0.1:{port}", "http.listeners": ""})
    target = HttpBroker(source.workdir + "-target", name="target")
    try:
        target.start()
        topic = unique("flaky")
        ck.create_topic(source, topic, partitions=1)
        produce_keyed(source, topic, 20, 1)
        create_link(target, source, "fl", "--topics", topic)
        wait_mirrored(target, "fl", topic, source_ends(source, topic, 1))
        with urllib.request.urlopen(f"http://127.0.0.1:{target.http_port}/metrics", timeout=10) as r:
            metrics = r.read().decode()
        assert f'runnel_link_mirror_partition_lag{{link="fl",topic="{topic}",partition="0"}} 0' in metrics
        with urllib.request.urlopen(f"http://127.0.0.1:{target.http_port}/v1/links?name=fl", timeout=10) as r:
            assert json.load(r)["links"][0]["topics"][0]["partitions"][0]["lag"] == 0

        source.kill9()
        deadline = time.monotonic() + 30
        while describe(target, "fl")["state"] != "SOURCE_UNAVAILABLE":
            assert time.monotonic() < deadline
            time.sleep(0.5)
        time.sleep(4)  # several retries
        log = open(target.log_path).read()
        assert 1 <= log.count("cannot mirror from the source; retrying with backoff") <= 2, log[-3000:]
        assert log.count("cluster link cannot reach its source") == 1, log[-3000:]

        source.start()
        assert source.port == port
        produce_keyed(source, topic, 20, 1, start=20)
        wait_mirrored(target, "fl", topic, source_ends(source, topic, 1), timeout=60)
        assert_identical(source, target, topic, 1)
        assert describe(target, "fl")["state"] == "ACTIVE"
    finally:
        problems = target.stop()
        assert not problems, problems


def test_bad_link_requests_are_refused(pair):
    source, target = pair
    r = links(target, "create", "bad", "--source", source.bootstrap, "--topics", "(", check=False)
    assert r.returncode == 1 and "INVALID_CONFIG" in r.stderr.upper().replace(" ", "_") or "regular expression" in r.stderr, r.stderr
    r = links(target, "create", "bad", "--source", source.bootstrap, "--set", "no.such=1", check=False)
    assert r.returncode == 1 and "no.such" in r.stderr, r.stderr
    r = links(target, "describe", "nope", check=False)
    assert r.returncode == 1 and "does not exist" in r.stderr, r.stderr
    create_link(target, source, "ok")
    r = links(target, "create", "ok", "--source", source.bootstrap, check=False)
    assert r.returncode == 1 and "already exists" in r.stderr, r.stderr
    r = links(target, "promote", "ok", "--topic", "not-a-mirror", check=False)
    assert r.returncode == 1 and "not a mirror topic" in r.stderr, r.stderr
    # A local topic with a source topic's name is not overwritten: it is a collision.
    name = unique("clash")
    ck.create_topic(target, name)
    produce_keyed(target, name, 3, 1)
    ck.create_topic(source, name)
    deadline = time.monotonic() + 20
    while name not in describe(target, "ok")["collisions"]:
        assert time.monotonic() < deadline, describe(target, "ok")
        time.sleep(0.3)
    assert len(records(target, name, 0)) == 3
    # A mirror topic deleted on the source stays here and is reported.
    gone = unique("gone")
    ck.create_topic(source, gone)
    produce_keyed(source, gone, 5, 1)
    wait_mirrored(target, "ok", gone, {0: 5})
    a = ck.admin(source)
    a.delete_topics([gone])[gone].result(15)
    deadline = time.monotonic() + 20
    while gone not in describe(target, "ok")["source_missing"]:
        assert time.monotonic() < deadline, describe(target, "ok")
        time.sleep(0.3)
    assert len(records(target, gone, 0)) == 5


@pytest.mark.timeout_s(240)
def test_three_node_target_follows_leadership(tmp_path, start_broker):
    """A 3-node target: the link lives in the metadata log, each mirror partition is
    copied by its leader and replicated to the other two; killing the leader of a mirror
    partition mid-stream moves the copying to the new leader, nothing lost or doubled."""
    from cluster import Cluster
    source = start_broker({"http.listeners": ""})
    c = Cluster(tmp_path / "target").start()
    try:
        topic = unique("ha")
        ck.create_topic(source, topic, partitions=2)
        create_link(c, source, "ha", "--topics", topic)
        stop = threading.Event()
        produced = []

        def produce():
            p = ck.producer(source, enable_idempotence=True)
            i = 0
            while not stop.is_set():
                p.produce(topic, f"v{i}".encode(), partition=i % 2)
                i += 1
                if i % 50 == 0:
                    p.flush(10)
                    time.sleep(0.02)
            p.flush(20)
            produced.append(i)

        t = threading.Thread(target=produce, daemon=True)
        t.start()
        # Before any metadata request names the topic here (which would auto-create it).
        c.wait_for("the mirror topic", lambda: describe(c, "ha")["topics"])
        c.wait_for("the mirror topic on every node",
                   lambda: len(c.partition_state(topic, 0)[2]) == 3)
        time.sleep(2)
        leader, _, _ = c.partition_state(topic, 0)
        c.node(leader).kill9()
        c.wait_for("a new leader", lambda: c.partition_state(topic, 0)[0] not in (leader, -1), timeout=40)
        time.sleep(2)
        c.node(leader).start()
        stop.set()
        t.join(30)
        assert produced and produced[0] > 100
        wait_mirrored(c, "ha", topic, source_ends(source, topic, 2), timeout=90)
        for p in range(2):
            a = records(source, topic, p)
            for n in c.nodes:  # every replica serves the same records once caught up
                b = [(m.offset(), m.key(), m.value(), m.headers(), m.timestamp())
                     for m in ck.consume(n, topic, p, start=OFFSET_BEGINNING, timeout=30,
                                         isolation_level="read_uncommitted")]
                assert a == b, f"{topic}[{p}] differs on node {n.node_id}: {len(a)} vs {len(b)}"
        # Still read-only, from any node.
        d = ck.Delivery()
        pr = ck.producer(c.nodes[0], retries=0)
        pr.produce(topic, b"nope", partition=0, on_delivery=d)
        pr.flush(15)
        assert d.failed and d.failed[0][0].code() == KafkaError.INVALID_REQUEST

        # The managing broker (the active controller) killed: another takes over and
        # picks up a new source topic.
        later = unique("ha")
        create_link(c, source, "ha2", "--topics", later)
        controller = ck.admin(c.nodes[0]).list_topics(timeout=10).controller_id
        c.node(controller).kill9()
        ck.create_topic(source, later, partitions=1)
        produce_keyed(source, later, 10, 1)
        # The killed broker is fenced at once (its port refuses connections), so an RF=3
        # mirror topic can only be placed once it is back, as in Kafka.
        c.node(controller).start()
        alive = next(n for n in c.nodes if n.node_id != controller)
        wait_mirrored(alive, "ha2", later, {0: 10}, timeout=60)
    finally:
        problems = c.stop()
        assert not problems, "\n".join(problems)


def describe_configs_v1(broker, resource_type, name):
    """DescribeConfigs v1 over the raw wire: [(name, value, read_only, is_sensitive)]."""
    body = (struct.pack(">i", 1) + struct.pack(">b", resource_type) + kwire.string(name)
            + struct.pack(">i", -1) + struct.pack(">b", 0))
    with kwire.Conn(*broker.address) as c:
        r = c.request(32, 1, body)
    r.int32()  # throttle
    assert r.int32() == 1
    code, message = r.int16(), r.string()
    assert code == 0, (code, message)
    r.int8()
    r.string()
    out = []
    for _ in range(r.int32()):
        cname, value, read_only = r.string(), r.string(), r.int8()
        r.int8()  # config source
        sensitive = r.int8()
        for _ in range(r.int32()):
            r.string(), r.string(), r.int8()
        out.append((cname, value, bool(read_only), bool(sensitive)))
    return out


def start_sasl_ssl_source(start_broker, tmp_path, mtls_port=None):
    """A broker with a PLAINTEXT listener (bootstrap, for the test's own clients) and a
    SASL_SSL one (PLAIN users of test_security_auth's JAAS, e.g. alice/alice-secret),
    and with `mtls_port` an SSL listener that requires a client certificate.
    Returns (broker, the SASL_SSL port, the certificate paths)."""
    from test_security_auth import JAAS, make_certs
    certs = make_certs(tmp_path)
    plain, secure = free_ports(2)
    mtls = f",MTLS://127.0.0.1:{mtls_port}" if mtls_port else ""
    source = start_broker({
        "listeners": f"PLAINTEXT://127.0.0.1:{plain},SASL_SSL://127.0.0.1:{secure}{mtls}",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL,MTLS:SSL",
        "listener.name.mtls.ssl.client.auth": "required",
        "inter.broker.listener.name": "PLAINTEXT",
        "ssl.keystore.type": "PEM", "ssl.keystore.location": certs["server"],
        "ssl.truststore.type": "PEM", "ssl.truststore.location": certs["ca"],
        "sasl.enabled.mechanisms": "PLAIN", "sasl.jaas.config": JAAS,
        "http.listeners": ""})
    return source, secure, certs


@pytest.mark.timeout_s(120)
def test_link_to_a_sasl_ssl_source(start_broker, tmp_path):
    """A link reaches a source through SASL_SSL (PLAIN over TLS, the CA given inline as
    PEM); its secrets are never shown back; a wrong password makes the link say so."""
    source, secure, certs = start_sasl_ssl_source(start_broker, tmp_path)
    target = start_broker({"http.listeners": ""})
    topic = unique("sec")
    ck.create_topic(source, topic, partitions=2)
    produce_keyed(source, topic, 50, 2)
    ca = open(certs["ca"]).read()
    secret = "alice-secret"
    jaas = ('org.apache.kafka.common.security.plain.PlainLoginModule required '
            f'username="alice" password="{secret}";')
    # Without a CA the link cannot check the source: refused at create, naming the key.
    r = links(target, "create", "noca", "--source", f"127.0.0.1:{secure}",
              "--set", "security.protocol=SASL_SSL", "--set", "sasl.mechanism=PLAIN",
              "--set", f"sasl.jaas.config={jaas}", check=False)
    assert r.returncode != 0 and "ssl.truststore" in r.stderr, r.stderr
    # The CA on one line (as a properties value often carries PEM).
    links(target, "create", "sec", "--source", f"127.0.0.1:{secure}", *FAST,
          "--topics", topic, "--set", "security.protocol=SASL_SSL",
          "--set", "sasl.mechanism=PLAIN", "--set", f"sasl.jaas.config={jaas}",
          "--set", "ssl.truststore.certificates=" + " ".join(ca.split()))
    wait_mirrored(target, "sec", topic, source_ends(source, topic, 2))
    assert_identical(source, target, topic, 2)

    # Secrets: null and sensitive in DescribeConfigs, null in describe --json, absent
    # from the text output; the other configs are shown.
    entries = {e[0]: e for e in describe_configs_v1(target, 101, "sec")}
    for key in ("sasl.jaas.config", "ssl.truststore.certificates"):
        assert entries[key][1] is None and entries[key][3], entries[key]
    assert entries["security.protocol"][1:] == ("SASL_SSL", False, False)
    d = describe(target, "sec")
    assert d["configs"]["sasl.jaas.config"] is None and d["configs"]["sasl.mechanism"] == "PLAIN"
    assert d["state"] == "ACTIVE", d
    text = links(target, "describe", "sec").stdout
    assert secret not in text and "BEGIN CERTIFICATE" not in text
    assert "sasl.jaas.config=null (sensitive)" in text, text
    for raw in (json.dumps(d), links(target, "list", "--json").stdout):
        assert secret not in raw

    # A wrong password (librdkafka's spelling): the link says the source refused it.
    links(target, "create", "bad", "--source", f"127.0.0.1:{secure}", *FAST,
          "--topics", "nothing", "--set", "security.protocol=SASL_SSL",
          "--set", "sasl.mechanism=PLAIN", "--set", "sasl.username=alice",
          "--set", "sasl.password=wrong", "--set", f"ssl.truststore.certificates={ca}")
    d = describe(target, "bad")
    assert d["state"] == "SOURCE_UNAVAILABLE", d
    assert "uthentication" in (d["error"] or ""), d
    assert d["configs"]["sasl.password"] is None and d["configs"]["sasl.username"] == "alice"


@pytest.mark.timeout_s(90)
def test_link_with_a_client_certificate_given_inline(start_broker, tmp_path):
    """mTLS to the source: the CA, the client certificate and its key as PEM values
    (Kafka's ssl.truststore.certificates, ssl.keystore.certificate.chain,
    ssl.keystore.key); without the certificate the source refuses the link."""
    mtls = free_ports(1)[0]
    source, _, certs = start_sasl_ssl_source(start_broker, tmp_path, mtls_port=mtls)
    target = start_broker({"http.listeners": ""})
    topic = unique("mtls")
    ck.create_topic(source, topic, partitions=1)
    produce_keyed(source, topic, 20, 1)
    pem = {k: open(certs[k]).read() for k in ("ca", "cert", "key")}
    tls = ["--set", "security.protocol=SSL", "--set", f"ssl.truststore.certificates={pem['ca']}"]
    links(target, "create", "nocert", "--source", f"127.0.0.1:{mtls}", *FAST, "--topics", topic, *tls)
    links(target, "create", "mtls", "--source", f"127.0.0.1:{mtls}", *FAST, "--topics", topic, *tls,
          "--set", f"ssl.keystore.certificate.chain={pem['cert']}",
          "--set", f"ssl.keystore.key={pem['key']}")
    wait_mirrored(target, "mtls", topic, source_ends(source, topic, 1))
    assert_identical(source, target, topic, 1)
    d = describe(target, "mtls")
    assert d["configs"]["ssl.keystore.key"] is None and d["configs"]["ssl.keystore.certificate.chain"] is None
    assert "PRIVATE KEY" not in links(target, "describe", "mtls", "--json").stdout
    assert describe(target, "nocert")["state"] == "SOURCE_UNAVAILABLE"


def acl_set(broker):
    """The broker's ACLs as (type, name, pattern, principal, host, operation, permission)."""
    from confluent_kafka.admin import AclBindingFilter, AclOperation, AclPermissionType, ResourcePatternType, ResourceType
    f = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None,
                         AclOperation.ANY, AclPermissionType.ANY)
    admin = ck.admin(broker)  # kept alive until the result is in
    return {(a.restype.name, a.name, a.resource_pattern_type.name, a.principal, a.host,
             a.operation.name, a.permission_type.name)
            for a in admin.describe_acls(f).result(15)}


def wait_acls(target, name, want, synced, timeout=20):
    """Until the target's ACLs are exactly `want` and the link reports `synced` ACLs."""
    deadline = time.monotonic() + timeout
    while True:
        have, d = acl_set(target), describe(target, name)
        if have == want and d["acls_synced"] == synced:
            return d
        assert time.monotonic() < deadline, f"target ACLs {have}, want {want}; describe {d}"
        time.sleep(0.3)


def test_acl_sync_follows_the_source_and_removes_only_its_own(start_broker):
    """acl.sync.enable (Confluent's key): the source's ACLs matching acl.filters are
    created on the target; ACLs deleted on the source are deleted on the target only when
    the link created them; an ACL made on the target by an admin is never touched."""
    from confluent_kafka.admin import AclBinding, AclBindingFilter, AclOperation, AclPermissionType, ResourcePatternType, ResourceType
    authz = {"authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
             "super.users": "User:ANONYMOUS"}
    source = start_broker(dict(authz))
    target = HttpBroker(source.workdir + "-target", authz, name="target")
    try:
        target.start()
        acl_sync_check(source, target)
    finally:
        target.stop()


def acl_sync_check(source, target):
    from confluent_kafka.admin import AclBinding, AclBindingFilter, AclOperation, AclPermissionType, ResourcePatternType, ResourceType

    def acl(topic, principal, op=AclOperation.READ):
        return AclBinding(ResourceType.TOPIC, topic, ResourcePatternType.LITERAL, principal, "*",
                          op, AclPermissionType.ALLOW)

    def key(b):
        return (b.restype.name, b.name, b.resource_pattern_type.name, b.principal, b.host,
                b.operation.name, b.permission_type.name)

    def create(broker, *bindings):
        admin = ck.admin(broker)
        for f in admin.create_acls(list(bindings)).values():
            f.result(15)

    def delete(broker, b):
        f = AclBindingFilter(b.restype, b.name, b.resource_pattern_type, b.principal, b.host,
                             b.operation, b.permission_type)
        admin = ck.admin(broker)
        for fut in admin.delete_acls([f]).values():
            fut.result(15)

    synced, shared, admins, other = (acl("orders", "User:alice"),
                                     acl("orders", "User:alice", AclOperation.WRITE),
                                     acl("local", "User:carol"), acl("payments", "User:alice"))
    create(source, synced, shared, other)
    create(target, shared, admins)  # `shared` exists here before the link: not the link's
    # Only the alice ACLs (Confluent's acl.filters JSON); a group ACL does not match.
    create(source, AclBinding(ResourceType.GROUP, "g", ResourcePatternType.LITERAL, "User:alice",
                              "*", AclOperation.READ, AclPermissionType.ALLOW))
    filters = json.dumps({"aclFilters": [{"resourceFilter": {"resourceType": "topic", "patternType": "any"},
                                          "accessFilter": {"principal": "User:alice", "operation": "any",
                                                           "permissionType": "any"}}]})
    create_link(target, source, "acls", "--topics", "none", "--set", "acl.sync.enable=true",
                "--set", "acl.sync.ms=300", "--set", f"acl.filters={filters}")
    d = wait_acls(target, "acls", {key(synced), key(shared), key(admins), key(other)}, 2)
    assert d["acl_sync_error"] is None
    out = links(target, "describe", "acls").stdout
    assert "ACLs synced from the source: 2" in out, out
    # Deleted on the source: the link's own ACL goes, the one that was here before stays.
    delete(source, synced)
    delete(source, shared)
    d = wait_acls(target, "acls", {key(shared), key(admins), key(other)}, 1)
    with urllib.request.urlopen(f"http://127.0.0.1:{target.http_port}/metrics", timeout=10) as r:
        assert 'runnel_link_acls_synced{link="acls"} 1' in r.read().decode()
    # Deleting the link leaves the ACLs it made (and forgets them).
    links(target, "delete", "acls")
    assert acl_set(target) == {key(shared), key(admins), key(other)}
    bad = links(target, "create", "bad", "--source", source.bootstrap, "--set",
                "acl.sync.enable=true", "--set", "acl.filters={}", check=False)
    assert bad.returncode == 1 and "acl.filters" in bad.stderr, bad.stderr


def test_acl_sync_without_an_authorizer_is_reported_and_mirroring_goes_on(pair):
    """A target with no authorizer has nowhere to put ACLs: describe says so
    (acl_sync_error) while the link keeps mirroring."""
    source, target = pair
    topic = unique("noacl")
    ck.create_topic(source, topic)
    produce_keyed(source, topic, 5, 1)
    create_link(target, source, "noacl", "--topics", topic, "--set", "acl.sync.enable=true",
                "--set", "acl.sync.ms=300")
    d = wait_mirrored(target, "noacl", topic, {0: 5})
    deadline = time.monotonic() + 20
    while not d["acl_sync_error"]:
        assert time.monotonic() < deadline, d
        time.sleep(0.3)
        d = describe(target, "noacl")
    assert "authorizer" in d["acl_sync_error"] and d["state"] == "ACTIVE", d
    assert d["acls_synced"] == 0


@pytest.mark.timeout_s(180)
def test_acl_sync_on_a_three_node_target_survives_the_manager(tmp_path, start_broker):
    """On a 3-node target the ACLs the link created are recorded in the metadata log, so
    when the managing broker (the active controller) is killed, the next one still
    deletes them once the source drops them."""
    from types import SimpleNamespace

    from cluster import Cluster
    from confluent_kafka.admin import AclBinding, AclBindingFilter, AclOperation, AclPermissionType, ResourcePatternType, ResourceType
    authz = {"authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
             "super.users": "User:ANONYMOUS"}
    source = start_broker({**authz, "http.listeners": ""})
    c = Cluster(tmp_path / "target", configs=authz).start()
    try:
        acls = [AclBinding(ResourceType.TOPIC, f"t{i}", ResourcePatternType.LITERAL, "User:alice", "*",
                           AclOperation.READ, AclPermissionType.ALLOW) for i in range(2)]
        admin = ck.admin(source)
        for f in admin.create_acls(acls).values():
            f.result(15)
        create_link(c, source, "acl3", "--topics", "none", "--set", "acl.sync.enable=true",
                    "--set", "acl.sync.ms=300")
        want = {("TOPIC", f"t{i}", "LITERAL", "User:alice", "*", "READ", "ALLOW") for i in range(2)}
        c.wait_for("the ACLs on the target", lambda: acl_set(c) == want, timeout=40)
        manager = ck.admin(c).list_topics(timeout=10).controller_id
        c.node(manager).kill9()
        alive = SimpleNamespace(bootstrap=c.alive_bootstrap())
        b = acls[0]
        f = AclBindingFilter(b.restype, b.name, b.resource_pattern_type, b.principal, b.host,
                             b.operation, b.permission_type)
        for fut in admin.delete_acls([f]).values():
            fut.result(15)
        c.wait_for("the dropped ACL deleted by the next manager",
                   lambda: acl_set(alive) == {("TOPIC", "t1", "LITERAL", "User:alice", "*", "READ", "ALLOW")},
                   timeout=60)
        assert describe(alive, "acl3")["acls_synced"] == 1
    finally:
        c.stop()
