"""The HTTP admin API (crates/broker/src/http) against a running broker: every JSON
endpoint, /metrics against docs/metrics.md, the error cases (unknown topic 404, bad
input 400, other methods 405), and every path, method and status of docs/openapi.yaml
answering as described there (response bodies checked against its schemas). The
console's changes (create/delete topics, partitions, configs, produce, records, offset
resets) are checked against what Kafka clients see; the console itself is driven in a
browser by tests/clients/js/console.test.js.

The broker is started with `http.listeners=127.0.0.1:0`; it then prints a second
start-up line, `http listening on 127.0.0.1:PORT`, read here.
"""

import base64
import json
import os
import re
import select
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic,
                                  ResourceType)

import ck
from harness import Broker, BrokerError, unique

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
OPENAPI = os.path.join(ROOT, "docs", "openapi.yaml")
METRICS_DOC = os.path.join(ROOT, "docs", "metrics.md")
HTTP_LISTENING = re.compile(rb"^http listening on 127\.0\.0\.1:(\d+)\s*$", re.M)


class HttpBroker(Broker):
    """A broker with the HTTP API on a free port; `http_port` from its second line."""

    def __init__(self, workdir, configs=None, name="http-broker"):
        super().__init__(workdir, {"http.listeners": "127.0.0.1:0", **(configs or {})}, name)
        self.http_port = None

    def _read_first_line(self, timeout):
        fd = self.proc.stdout.fileno()
        buf = b""
        deadline = time.monotonic() + timeout
        while not HTTP_LISTENING.search(buf):
            left = deadline - time.monotonic()
            if left <= 0:
                self.kill9()
                raise BrokerError(f"no 'http listening on' line within {timeout}s: {buf!r}\n"
                                  + self.log_tail())
            r, _, _ = select.select([fd], [], [], min(left, 0.5))
            if r:
                chunk = os.read(fd, 4096)
                if not chunk:
                    code = self.proc.wait()
                    raise BrokerError(f"broker exited with {code} at start; stdout={buf!r}\n"
                                      + self.log_tail())
                buf += chunk
        self.http_port = int(HTTP_LISTENING.search(buf).group(1))
        lines = buf.decode(errors="replace").splitlines()
        assert lines[1].startswith("http listening on "), f"start-up lines: {lines}"
        return lines[0]

    def url(self, path):
        return f"http://127.0.0.1:{self.http_port}{path}"


def _stop(b):
    problems = b.stop()
    if problems:
        pytest.fail("\n".join(problems) + "\n" + b.log_tail(30), pytrace=False)


@pytest.fixture(scope="module")
def hb(tmp_path_factory):
    b = HttpBroker(tmp_path_factory.mktemp("http"), {
        "group.initial.rebalance.delay.ms": "0",
        "log.segment.bytes": "1048576",
        "broker.rack": "rack-a",
    })
    try:
        b.start()
        yield b
    finally:
        _stop(b)


def call(b, path, method="GET", body=None):
    """(status, content type, body bytes); `body` is sent as JSON."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(b.url(path), method=method, data=data,
                                 headers={} if data is None else {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read()


def get_json(b, path, status=200):
    code, ctype, body = call(b, path)
    assert code == status, f"GET {path}: {code} {body[:500]!r}"
    assert ctype.startswith("application/json"), f"GET {path}: content type {ctype}"
    return json.loads(body)


def send(b, method, path, body, status=200):
    """A change through the API; its JSON answer."""
    code, ctype, out = call(b, path, method, body)
    assert code == status, f"{method} {path}: {code} {out[:500]!r}"
    assert ctype.startswith("application/json"), f"{method} {path}: content type {ctype}"
    return json.loads(out)


def expect_error(b, path, status, *words, method="GET", body=None):
    code, ctype, body = call(b, path, method, body)
    assert code == status, f"{method} {path}: expected {status}, got {code} {body[:300]!r}"
    assert ctype.startswith("application/json"), f"{method} {path}: content type {ctype}"
    doc = json.loads(body)
    assert set(doc) == {"error"} and isinstance(doc["error"], str) and doc["error"], doc
    for w in words:
        assert w in doc["error"], f"{w!r} not in {doc['error']!r}"
    return doc["error"]


def q(s):
    return urllib.parse.quote(s, safe="")


@pytest.fixture(scope="module")
def data(hb):
    """A topic with records, a group of one live subscribed member with commits, and an
    offsets-only group; shared by the read-only tests below."""
    topic = unique("http")
    a = ck.admin(hb)
    fs = a.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1,
                                   config={"retention.ms": "123456789"})])
    fs[topic].result(15)
    ck.wait_for_topic(a, topic, 3)
    p = ck.producer(hb)
    d = ck.produce_all(p, topic, [{"value": f"v{i}".encode()} for i in range(10)], partition=0)
    assert d.failed == []
    d = ck.produce_all(p, topic, [{"value": b"x"} for _ in range(4)], partition=1)
    assert d.failed == []

    # Offsets only: committed through an assign()-only consumer.
    plain = unique("plain") + " x/y"
    c = ck.consumer(hb, **{"group.id": plain})
    c.commit(offsets=[TopicPartition(topic, 0, 3)], asynchronous=False)
    c.close()

    # A live member of a classic consumer group that consumed and committed 6 of p0.
    live = unique("live")
    consumer = Consumer({"bootstrap.servers": hb.bootstrap, "group.id": live,
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "session.timeout.ms": 10000, "log_level": 3})
    consumer.subscribe([topic])
    got = 0
    deadline = time.monotonic() + 30
    while got < 14 and time.monotonic() < deadline:
        m = consumer.poll(0.5)
        if m is not None and not m.error():
            got += 1
    assert got == 14, f"consumed {got} of 14"
    consumer.commit(offsets=[TopicPartition(topic, 0, 6), TopicPartition(topic, 1, 4)],
                    asynchronous=False)
    # A share group (KIP-932) with one member, for /v1/share-groups/{id}.
    from confluent_kafka import ShareConsumer
    share = unique("share")
    sc = ShareConsumer({"bootstrap.servers": hb.bootstrap, "group.id": share, "log_level": 3})
    sc.subscribe([topic])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        sc.poll(0.2)
        if any(g["group_id"] == share for g in get_json(hb, "/v1/share-groups")["groups"]):
            break
    else:
        raise AssertionError("the share group never appeared in /v1/share-groups")
    yield {"topic": topic, "plain": plain, "live": live, "consumer": consumer, "share": share}
    sc.close()
    consumer.close()


# ------------------------------------------------------------------ endpoints


def test_brokers_gives_the_bootstrap_string(hb):
    doc = get_json(hb, "/v1/brokers")
    assert doc["bootstrap_servers"] == hb.bootstrap
    assert doc["controller_id"] == 1 and len(doc["cluster_id"]) == 22
    assert doc["brokers"] == [{"node_id": 1, "host": "127.0.0.1", "port": hb.port,
                               "rack": "rack-a", "bootstrap": hb.bootstrap, "fenced": False}]
    # A single node is its own one-voter metadata quorum.
    assert doc["quorum"] == {"leader": 1, "voters": [1]}, doc["quorum"]
    # The string works as a client's bootstrap.servers.
    md = AdminClient({"bootstrap.servers": doc["bootstrap_servers"], **ck.QUIET}).list_topics(timeout=10)
    assert 1 in md.brokers


def test_topics_lists_partitions_with_offsets_and_sizes(hb, data):
    doc = get_json(hb, "/v1/topics")
    names = [t["name"] for t in doc["topics"]]
    assert names == sorted(names)
    t = next(t for t in doc["topics"] if t["name"] == data["topic"])
    assert t["partition_count"] == 3 and t["replication_factor"] == 1 and not t["internal"]
    assert t["configs"] == {"retention.ms": "123456789"}
    parts = {p["partition"]: p for p in t["partitions"]}
    assert sorted(parts) == [0, 1, 2]
    for p in parts.values():
        assert p["leader"] == 1 and p["replicas"] == [1] and p["isr"] == [1]
        assert p["offline_replicas"] == [] and p["log_start_offset"] == 0
        assert p["segments"] >= 1 and p["log_dir"] == hb.data_dir
    assert [parts[i]["log_end_offset"] for i in range(3)] == [10, 4, 0]
    assert parts[0]["high_watermark"] == 10 and parts[0]["last_stable_offset"] == 10
    assert parts[0]["size_bytes"] > 0 and parts[2]["size_bytes"] == 0
    assert t["size_bytes"] == sum(p["size_bytes"] for p in parts.values())
    # Internal topics are listed, and left out on request.
    assert "__consumer_offsets" in names
    inner = get_json(hb, "/v1/topics?internal=true")
    assert [x["name"] for x in inner["topics"]] == names
    outer = get_json(hb, "/v1/topics?internal=false")
    assert data["topic"] in [x["name"] for x in outer["topics"]]
    assert not any(x["name"].startswith("__") for x in outer["topics"])


def test_one_topic_and_one_partition(hb, data):
    t = get_json(hb, f"/v1/topics/{data['topic']}")
    assert t["name"] == data["topic"] and len(t["partitions"]) == 3
    assert len(t["id"]) == 36
    one = get_json(hb, f"/v1/topics/{data['topic']}?partition=1")
    assert [p["partition"] for p in one["partitions"]] == [1]
    assert one["partitions"][0]["log_end_offset"] == 4 and one["partition_count"] == 3


def test_unknown_topic_is_404_naming_it(hb, data):
    name = unique("nosuch")
    expect_error(hb, f"/v1/topics/{name}", 404, name)
    expect_error(hb, f"/v1/configs/topics/{name}", 404, name)
    expect_error(hb, f"/v1/topics/{data['topic']}?partition=7", 404, "partition 7")


def test_bad_input_is_400(hb, data):
    expect_error(hb, "/v1/topics/" + q("bad name!"), 400, "bad name!")
    expect_error(hb, "/v1/configs/topics/" + q("a/b"), 400, "a/b")
    expect_error(hb, "/v1/topics/" + "x" * 250, 400, "249")
    expect_error(hb, f"/v1/topics/{data['topic']}?partition=abc", 400, "partition", "abc")
    expect_error(hb, f"/v1/topics/{data['topic']}?partition=-1", 400, "partition")
    expect_error(hb, f"/v1/topics/{data['topic']}?partition=99999999999", 400, "partition")
    expect_error(hb, "/v1/topics?internal=maybe", 400, "internal", "maybe")
    expect_error(hb, "/v1/topics?limit=3", 400, "limit")
    expect_error(hb, "/v1/groups/" + q("g\x01roup"), 400, "group id")
    expect_error(hb, "/v1/groups/%FF%FE", 400)
    expect_error(hb, "/v1/health?verbose=1", 400, "verbose")


def test_unknown_paths_and_other_methods(hb):
    expect_error(hb, "/v1/nothing", 404, "/v1/nothing")
    expect_error(hb, "/console/nothing.js", 404, "nothing.js")
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        expect_error(hb, "/v1/brokers", 405, method, method=method)
    req = urllib.request.Request(hb.url("/v1/topics"), method="PUT")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 405
    assert set(e.value.headers["Allow"].replace(" ", "").split(",")) == {"GET", "HEAD", "POST"}
    code, _, body = call(hb, "/v1/health", "HEAD")
    assert code == 200 and body == b""


def test_groups_list_state_type_and_members(hb, data):
    doc = get_json(hb, "/v1/groups")
    by_id = {g["group_id"]: g for g in doc["groups"]}
    live = by_id[data["live"]]
    assert live == {"group_id": data["live"], "type": "classic", "protocol_type": "consumer",
                    "state": "Stable", "members": 1}
    plain = by_id[data["plain"]]
    assert plain["members"] == 0 and plain["state"] == "Empty"


def test_group_members_offsets_and_lag(hb, data):
    topic = data["topic"]
    g = get_json(hb, "/v1/groups/" + q(data["live"]))
    assert g["group_id"] == data["live"] and g["state"] == "Stable"
    assert g["protocol_type"] == "consumer" and g["protocol"] in ("range", "roundrobin", "cooperative-sticky")
    assert len(g["members"]) == 1
    m = g["members"][0]
    assert m["member_id"] and m["client_host"]
    assert m["assignment"] == [{"topic": topic, "partitions": [0, 1, 2]}]
    rows = {(o["topic"], o["partition"]): o for o in g["offsets"]}
    assert rows[(topic, 0)]["committed_offset"] == 6
    assert rows[(topic, 0)]["log_end_offset"] == 10 and rows[(topic, 0)]["lag"] == 4
    assert rows[(topic, 1)]["lag"] == 0
    # Assigned but never committed: listed with no offset and no lag.
    assert rows[(topic, 2)]["committed_offset"] is None and rows[(topic, 2)]["lag"] is None
    assert all(o["member_id"] == m["member_id"] for o in g["offsets"])
    assert g["total_lag"] == 4

    # A group id that needs percent-encoding (space, slash) round-trips.
    p = get_json(hb, "/v1/groups/" + q(data["plain"]))
    assert p["group_id"] == data["plain"] and p["members"] == []
    assert [(o["partition"], o["committed_offset"], o["lag"], o["member_id"]) for o in p["offsets"]] \
        == [(0, 3, 7, None)]


def test_unknown_group_is_404(hb):
    name = unique("nogroup")
    expect_error(hb, "/v1/groups/" + name, 404, name)


def test_broker_configs(hb):
    doc = get_json(hb, "/v1/configs/broker")
    assert doc["node_id"] == 1
    by = {c["name"]: c for c in doc["configs"]}
    assert by["log.segment.bytes"]["value"] == "1048576"
    assert by["log.segment.bytes"]["source"] == "STATIC_BROKER_CONFIG"
    assert by["num.partitions"] == {"name": "num.partitions", "value": "1", "source": "DEFAULT_CONFIG",
                                    "read_only": True, "sensitive": False}
    assert by["http.listeners"]["value"] == "127.0.0.1:0"
    assert by["listeners"]["value"] == "PLAINTEXT://127.0.0.1:0"
    assert by["broker.rack"]["value"] == "rack-a"
    assert by["log.dirs"]["value"] == hb.data_dir


def test_topic_configs_with_sources(hb, data):
    doc = get_json(hb, f"/v1/configs/topics/{data['topic']}")
    assert doc["topic"] == data["topic"]
    by = {c["name"]: c for c in doc["configs"]}
    assert by["retention.ms"]["value"] == "123456789"
    assert by["retention.ms"]["source"] == "DYNAMIC_TOPIC_CONFIG"
    assert by["segment.bytes"] == {"name": "segment.bytes", "value": "1048576",
                                   "source": "STATIC_BROKER_CONFIG", "read_only": False,
                                   "sensitive": False}
    assert by["cleanup.policy"]["value"] == "delete" and by["cleanup.policy"]["source"] == "DEFAULT_CONFIG"
    for key in ("max.message.bytes", "min.insync.replicas", "message.timestamp.type"):
        assert by[key]["value"] is not None, key


def test_dynamic_broker_config_shows_as_dynamic(hb, data):
    r = ConfigResource(ResourceType.BROKER, "1", incremental_configs=[
        ConfigEntry("log.retention.bytes", "987654321", incremental_operation=AlterConfigOpType.SET)])
    a = ck.admin(hb)
    a.incremental_alter_configs([r])[r].result(timeout=10)
    by = {c["name"]: c for c in get_json(hb, "/v1/configs/broker")["configs"]}
    assert by["log.retention.bytes"] == {"name": "log.retention.bytes", "value": "987654321",
                                         "source": "DYNAMIC_BROKER_CONFIG", "read_only": False,
                                         "sensitive": False}
    assert by["node.id"]["read_only"] is True
    t = {c["name"]: c for c in get_json(hb, f"/v1/configs/topics/{data['topic']}")["configs"]}
    assert (t["retention.bytes"]["value"], t["retention.bytes"]["source"]) == ("987654321", "DYNAMIC_BROKER_CONFIG")


def test_health_and_ready(hb):
    assert get_json(hb, "/v1/health") == {"status": "ok"}
    r = get_json(hb, "/v1/ready")
    assert r["ready"] is True
    checks = {c["name"]: c for c in r["checks"]}
    assert checks["storage"]["ok"] and checks["listener"]["ok"]
    assert checks["listener"]["detail"] == hb.bootstrap


@pytest.mark.timeout_s(60)
def test_not_ready_when_a_log_dir_is_gone(tmp_path):
    b = HttpBroker(tmp_path / "nr", name="notready")
    try:
        b.start()
        assert get_json(b, "/v1/ready")["ready"] is True
        moved = b.data_dir + ".moved"
        os.rename(b.data_dir, moved)
        try:
            r = get_json(b, "/v1/ready", status=503)
        finally:
            os.rename(moved, b.data_dir)
        assert r["ready"] is False and r["error"]
        storage = next(c for c in r["checks"] if c["name"] == "storage")
        assert storage["ok"] is False and b.data_dir in storage["detail"]
        assert get_json(b, "/v1/ready")["ready"] is True
        assert get_json(b, "/v1/health") == {"status": "ok"}
    finally:
        _stop(b)


@pytest.mark.timeout_s(120)
def test_failed_log_dir_shows_offline_partitions(tmp_path):
    """A log dir on a full 2 MiB tmpfs goes offline: its partition has no leader in
    /v1/topics, /metrics counts it, readiness stays up (the other dir serves)."""
    small = tmp_path / "small-disk"
    small.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(small)],
                       capture_output=True, text=True)
    assert r.returncode == 0, f"this test mounts a tmpfs and needs root: {r.stderr.strip()}"
    big = str(tmp_path / "big-disk")
    b = HttpBroker(tmp_path / "fd", {"log.dirs": f"{big},{small}", "log.segment.bytes": 512 * 1024},
                   name="faileddir")
    try:
        b.start()
        topic = ck.create_topic(b, unique("full"), partitions=2)
        t = get_json(b, f"/v1/topics/{topic}")
        on_small = next(p["partition"] for p in t["partitions"] if p["log_dir"] == str(small))
        p = ck.producer(b, acks="all", message_timeout_ms=4000)
        for i in range(4000):  # ~4 MB into a 2 MiB disk
            p.produce(topic, value=b"x" * 1000, partition=on_small)
            if i % 200 == 0:
                p.poll(0)
        p.flush(30)
        part = get_json(b, f"/v1/topics/{topic}?partition={on_small}")["partitions"][0]
        assert part["leader"] == -1 and part["isr"] == [] and part["offline_replicas"] == [1], part
        other = get_json(b, f"/v1/topics/{topic}?partition={1 - on_small}")["partitions"][0]
        assert other["leader"] == 1 and other["log_dir"] == big
        _, s = scrape(b)
        assert value(s, "runnel_offline_partitions") == 1
        assert value(s, "runnel_log_dir_offline", log_dir=str(small)) == 1
        assert value(s, "runnel_log_dir_offline", log_dir=big) == 0
        ready = get_json(b, "/v1/ready")
        storage = next(c for c in ready["checks"] if c["name"] == "storage")
        assert ready["ready"] and "1 of 2" in storage["detail"] and str(small) in storage["detail"]
    finally:
        try:
            _stop(b)
        finally:
            subprocess.run(["umount", "-l", str(small)], capture_output=True)


def test_http_listener_can_be_disabled_and_is_validated(tmp_path):
    b = Broker(tmp_path / "off", {"http.listeners": ""}, name="nohttp")
    try:
        b.start()  # the harness's strict check: exactly one start-up line
        assert b.alive()
    finally:
        _stop(b)
    bad = Broker(tmp_path / "bad", {"http.listeners": "localhost:abc"}, name="badhttp")
    with pytest.raises(BrokerError, match="exited with 2"):
        bad.start()
    assert "http.listeners" in bad.log_tail()
    bad.expected_exit = True


# ------------------------------------------------------------------- metrics


def parse_metrics(text):
    """{family: type}, [(name, labels, value)]."""
    types, samples = {}, []
    sample = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
    label = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            types[name] = kind
        elif line.startswith("#") or not line:
            continue
        else:
            m = sample.match(line)
            assert m, f"malformed sample line {line!r}"
            labels = dict(label.findall(m.group(3) or ""))
            samples.append((m.group(1), labels, float(m.group(4))))
    return types, samples


def documented_metrics():
    """{name: (type, set of labels)} from the table in docs/metrics.md."""
    out = {}
    for line in open(METRICS_DOC, encoding="utf-8"):
        m = re.match(r"^\| `(runnel_[a-z_]+)` \| (\w+) \|([^|]*)\|", line)
        if m:
            out[m.group(1)] = (m.group(2), set(re.findall(r"`(\w+)`", m.group(3))))
    return out


def family_of(name, types):
    for suffix in ("_bucket", "_sum", "_count"):
        base = name[: -len(suffix)] if name.endswith(suffix) else None
        if base and types.get(base) == "histogram":
            return base
    return name


def scrape(hb):
    code, ctype, body = call(hb, "/metrics")
    assert code == 200 and ctype.startswith("text/plain"), (code, ctype)
    return parse_metrics(body.decode())


def value(samples, name, **labels):
    found = [v for (n, l, v) in samples if n == name and all(l.get(k) == x for k, x in labels.items())]
    assert len(found) == 1, f"{name}{labels}: {len(found)} samples"
    return found[0]


def test_metrics_match_docs(hb, data):
    types, samples = scrape(hb)
    doc = documented_metrics()
    assert len(doc) >= 15, "the metrics table in docs/metrics.md was not found"
    assert set(types) == set(doc), (f"undocumented: {set(types) - set(doc)}; "
                                    f"documented but absent: {set(doc) - set(types)}")
    for name, (kind, _) in doc.items():
        assert types[name] == kind, f"{name}: served as {types[name]}, documented as {kind}"
    for name, labels, _ in samples:
        fam = family_of(name, types)
        assert fam in doc, f"sample {name} of an undeclared family"
        want = set(doc[fam][1])
        if types[fam] == "histogram" and not name.endswith("_bucket"):
            want.discard("le")
        assert set(labels) == want, f"{name}: labels {sorted(labels)}, documented {sorted(want)}"


def test_metrics_values(hb, data):
    topic = data["topic"]
    types, s = scrape(hb)
    assert value(s, "runnel_topic_records_in_total", topic=topic) == 14
    assert value(s, "runnel_topic_bytes_in_total", topic=topic) > 14
    assert value(s, "runnel_topic_bytes_out_total", topic=topic) > 0
    assert value(s, "runnel_under_replicated_partitions") == 0
    assert value(s, "runnel_offline_partitions") == 0
    assert value(s, "runnel_partition_log_end_offset", topic=topic, partition="0") == 10
    assert value(s, "runnel_partition_log_start_offset", topic=topic, partition="0") == 0
    assert value(s, "runnel_partition_log_segments", topic=topic, partition="0") >= 1
    assert value(s, "runnel_partition_log_size_bytes", topic=topic, partition="0") > 0
    assert value(s, "runnel_partition_log_size_bytes", topic=topic, partition="2") == 0
    topics = get_json(hb, "/v1/topics")["topics"]
    assert value(s, "runnel_topics") == len(topics)
    assert value(s, "runnel_partitions") == sum(t["partition_count"] for t in topics)
    assert value(s, "runnel_consumer_group_lag", group=data["live"], topic=topic, partition="0") == 4
    assert value(s, "runnel_consumer_group_lag", group=data["live"], topic=topic, partition="1") == 0
    assert value(s, "runnel_consumer_group_committed_offset", group=data["live"], topic=topic,
                 partition="0") == 6
    assert value(s, "runnel_consumer_group_lag", group=data["plain"], topic=topic, partition="0") == 7
    assert value(s, "runnel_consumer_group_members", group=data["live"], state="Stable") == 1
    assert value(s, "runnel_connections_active") >= 1  # the live consumer
    assert value(s, "runnel_connections_total") >= value(s, "runnel_connections_active")
    info = [l for (n, l, v) in s if n == "runnel_broker_info"]
    assert info and info[0]["node_id"] == "1"


def test_request_metrics_per_api(hb, data):
    _, s = scrape(hb)
    apis = {l["api"] for (n, l, _) in s if n == "runnel_requests_total"}
    assert {"Produce", "Fetch", "Metadata", "ApiVersions", "OffsetCommit", "JoinGroup"} <= apis, apis
    for api in apis:
        total = value(s, "runnel_requests_total", api=api)
        assert total >= 1
        assert value(s, "runnel_request_duration_seconds_count", api=api) == total
        assert value(s, "runnel_request_duration_seconds_sum", api=api) >= 0
        buckets = sorted(((float(l["le"]), v) for (n, l, v) in s
                          if n == "runnel_request_duration_seconds_bucket" and l["api"] == api))
        counts = [v for _, v in buckets]
        assert counts == sorted(counts), f"{api}: buckets not cumulative"
        assert buckets[-1] == (float("inf"), total)
    # Counters only grow, and produce requests are counted as they happen.
    before = value(s, "runnel_requests_total", api="Produce")
    p = ck.producer(hb)
    assert ck.produce_all(p, data["topic"], [{"value": b"more"}], partition=2).failed == []
    _, s2 = scrape(hb)
    assert value(s2, "runnel_requests_total", api="Produce") > before
    assert value(s2, "runnel_topic_records_in_total", topic=data["topic"]) == 15


# ------------------------------------------------------------------- OpenAPI


def load_spec():
    yaml = pytest.importorskip("yaml", reason="PyYAML (tests/clients/python/requirements.txt)")
    with open(OPENAPI, encoding="utf-8") as f:
        return yaml.safe_load(f)


def resolve(spec, node):
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        assert ref.startswith("#/"), ref
        node = spec
        for part in ref[2:].split("/"):
            node = node[part]
    return node


def check_schema(spec, schema, v, where):
    """JSON Schema, the subset docs/openapi.yaml uses. Objects with `properties` are
    closed: a field the server sends must be documented."""
    schema = resolve(spec, schema)
    if v is None:
        assert schema.get("nullable"), f"{where}: null where the schema does not allow it"
        return
    t = schema.get("type")
    types = {"object": dict, "array": list, "string": str, "boolean": bool}
    if t == "integer":
        assert isinstance(v, int) and not isinstance(v, bool), f"{where}: {v!r} is not an integer"
        if "minimum" in schema:
            assert v >= schema["minimum"], where
    elif t == "number":
        assert isinstance(v, (int, float)) and not isinstance(v, bool), where
    elif t:
        assert isinstance(v, types[t]), f"{where}: {v!r} is not {t}"
    if "enum" in schema:
        assert v in schema["enum"], f"{where}: {v!r} not in {schema['enum']}"
    if t == "string" and "pattern" in schema:
        assert re.search(schema["pattern"], v), where
    if t == "object":
        props = schema.get("properties", {})
        for r in schema.get("required", []):
            assert r in v, f"{where}: required field {r!r} missing"
        for k, x in v.items():
            if k in props:
                check_schema(spec, props[k], x, f"{where}.{k}")
            elif "additionalProperties" in schema:
                check_schema(spec, schema["additionalProperties"], x, f"{where}.{k}")
            else:
                assert not props, f"{where}: field {k!r} is not in the schema"
    if t == "array":
        for i, x in enumerate(v):
            check_schema(spec, schema["items"], x, f"{where}[{i}]")


def test_openapi_document_is_well_formed():
    spec = load_spec()
    assert spec["openapi"].startswith("3.")
    assert spec["info"]["title"] and spec["paths"]
    ids = []
    for path, ops in spec["paths"].items():
        assert path.startswith("/"), path
        for method, op in ops.items():
            assert method in ("get", "put", "post", "delete", "patch", "head"), (path, method)
            ids.append(op["operationId"])
            assert op["responses"], (path, method)
            for code, r in op["responses"].items():
                r = resolve(spec, r)
                assert r["description"], (path, code)
                for media in r.get("content", {}).values():
                    resolve(spec, media["schema"])  # every $ref resolves
            for p in op.get("parameters", []):
                p = resolve(spec, p)
                assert p["in"] in ("path", "query") and p["name"]
                if p["in"] == "path":
                    assert "{" + p["name"] + "}" in path, (path, p["name"])
    assert len(ids) == len(set(ids)), "duplicate operationId"


def concrete(path, data, bad=False, unknown=False):
    """The path with its parameters filled: existing ones, unknown ones (404), or
    malformed ones (400)."""
    if "{name}" in path:
        path = path.replace("{name}", "bad name!" if bad else unique("missing") if unknown else data["topic"])
    if "{id}" in path:
        group = data["share"] if path.startswith("/v1/share-groups/") else data["live"]
        path = path.replace("{id}", "bad\x01id" if bad else unique("missing") if unknown else group)
    return "/".join(q(seg) for seg in path.split("/"))


def test_every_documented_path_and_status_answers_as_described(hb, data):
    spec = load_spec()
    served = set()
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            for code, resp in op["responses"].items():
                resp = resolve(spec, resp)
                if method != "get" and code != "400":
                    continue  # changes need a body: test_console_* below
                if code == "200":
                    url = concrete(path, data)
                elif code == "400":
                    # Malformed path parameters where there are some, otherwise an
                    # unknown query parameter (every endpoint refuses those).
                    url = concrete(path, data, bad=True) if "{" in path else concrete(path, data) + "?bogus=1"
                elif code == "404":
                    url = concrete(path, data, unknown=True)
                elif code == "503":
                    continue  # test_not_ready_when_a_log_dir_is_gone
                else:
                    raise AssertionError(f"{path} {code}: no way to provoke it here")
                status, ctype, body = call(hb, url, method.upper())
                assert status == int(code), f"{method.upper()} {url}: {status}, documented {code}: {body[:300]!r}"
                media = next(iter(resp["content"]))
                assert ctype.startswith(media), f"{url}: {ctype}, documented {media}"
                if media == "application/json":
                    check_schema(spec, resp["content"][media]["schema"], json.loads(body), f"{method} {url}")
                served.add((path, method, code))
    assert len(served) >= 20
    # Paths not in the document are 404, methods not in it 405.
    expect_error(hb, "/v1/undocumented", 404)
    for path, ops in spec["paths"].items():
        for method in ("post", "put", "delete"):
            if method not in ops:
                expect_error(hb, concrete(path, data), 405, method=method.upper())


def test_openapi_describes_every_route_the_server_has(hb):
    """Every documented path is a route (not the 404 fallback), and the document's
    response schemas accept what the server sends for the list endpoints."""
    spec = load_spec()
    paths = set(spec["paths"])
    assert paths == {"/v1/brokers", "/v1/topics", "/v1/topics/{name}", "/v1/groups",
                     "/v1/groups/{id}", "/v1/configs/broker", "/v1/configs/topics/{name}",
                     "/v1/health", "/v1/ready", "/metrics", "/v1/topics/{name}/partitions",
                     "/v1/topics/{name}/records", "/v1/groups/{id}/offsets/reset",
                     "/v1/links", "/v1/share-groups", "/v1/share-groups/{id}", "/v1/acls"}
    schema = spec["paths"]["/v1/brokers"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    check_schema(spec, schema, get_json(hb, "/v1/brokers"), "brokers")


@pytest.mark.timeout_s(60)
def test_kip848_consumer_group(hb, data):
    """A KIP-848 (group.protocol=consumer) group: type, members and their assignment."""
    topic = data["topic"]
    group = unique("kip848")
    c = Consumer({"bootstrap.servers": hb.bootstrap, "group.id": group, "group.protocol": "consumer",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False, "log_level": 3})
    try:
        c.subscribe([topic])
        deadline = time.monotonic() + 30
        g = None
        while time.monotonic() < deadline:
            c.poll(0.2)
            g = get_json(hb, "/v1/groups/" + group)
            if g["members"] and g["members"][0]["assignment"] and g["state"] == "Stable":
                break
        assert g["type"] == "consumer" and g["state"] == "Stable", g
        assert [m["assignment"] for m in g["members"]] == [[{"topic": topic, "partitions": [0, 1, 2]}]]
        summary = next(x for x in get_json(hb, "/v1/groups")["groups"] if x["group_id"] == group)
        assert summary["type"] == "consumer" and summary["members"] == 1
    finally:
        c.close()


# ------------------------------------------------------------------ the console's changes


def test_share_group_members_and_partitions(hb, data):
    """A share group's member (librdkafka's ShareConsumer) and its listing; the
    share-partition figures are checked in the console's browser test."""
    spec = load_spec()
    doc = get_json(hb, "/v1/share-groups/" + q(data["share"]))
    check_schema(spec, spec["components"]["schemas"]["ShareGroup"], doc, "share group")
    assert doc["group_id"] == data["share"] and len(doc["members"]) == 1, doc
    assert doc["members"][0]["subscribed"] == [data["topic"]]
    # A consumer group is not a share group.
    expect_error(hb, "/v1/share-groups/" + q(data["live"]), 404, "not a share group")


def test_acls_without_an_authorizer(hb):
    """No authorizer: an empty list that says so; a change is Kafka's SECURITY_DISABLED."""
    assert get_json(hb, "/v1/acls") == {"authorizer": False, "acls": []}
    acl = {"principal": "User:alice", "operation": "READ", "permission": "ALLOW",
           "resource_type": "TOPIC", "resource_name": "orders"}
    expect_error(hb, "/v1/acls", 400, "SECURITY_DISABLED", method="POST", body=acl)
    expect_error(hb, "/v1/acls", 400, "SECURITY_DISABLED", method="DELETE", body=acl)
    expect_error(hb, "/v1/acls", 400, "operation 'REED' is not one of", method="POST",
                 body={**acl, "operation": "REED"})
    expect_error(hb, "/v1/acls", 400, "ANY and MATCH are filters", method="DELETE",
                 body={**acl, "operation": "ANY"})
    expect_error(hb, "/v1/acls?resource_type=planet", 400, "resource_type 'planet'")



def response_schema(spec, path, method, code):
    return spec["paths"][path][method]["responses"][code]["content"]["application/json"]["schema"]


def test_console_page_and_assets_are_served_from_the_binary(hb):
    code, ctype, body = call(hb, "/")
    assert code == 200 and ctype.startswith("text/html"), (code, ctype)
    assert b"Runnel console" in body
    scripts = re.findall(rb'(?:src|href)="(/console/[^"]+)"', body)
    assert b"/console/app.js" in scripts and b"/console/style.css" in scripts
    for path in [s.decode() for s in scripts] + ["/console/views.js", "/console/lib.js"]:
        code, ctype, asset = call(hb, path)
        assert code == 200 and asset, path
        assert ctype.startswith("text/javascript" if path.endswith(".js") else "text/css"), (path, ctype)
        assert b"https://" not in asset, path


def test_console_topic_lifecycle_goes_through_kafka_validation(hb):
    spec = load_spec()
    topic = unique("console")
    body = {"name": topic, "partitions": 2, "configs": {"retention.ms": "86400000"}}
    doc = send(hb, "POST", "/v1/topics", body, 201)
    check_schema(spec, response_schema(spec, "/v1/topics", "post", "201"), doc, "create")
    assert doc["partition_count"] == 2 and doc["replication_factor"] == 1
    a = ck.admin(hb)
    ck.wait_for_topic(a, topic, 2)
    # The same refusals a Kafka client gets, named as Kafka names them.
    expect_error(hb, "/v1/topics", 409, "TOPIC_ALREADY_EXISTS", method="POST", body=body)
    expect_error(hb, "/v1/topics", 400, "INVALID_CONFIG", "retention.ms", method="POST",
                 body={"name": unique("bad"), "configs": {"retention.ms": "soon"}})
    expect_error(hb, "/v1/topics", 400, "INVALID_TOPIC_EXCEPTION", method="POST", body={"name": "bad name!"})
    expect_error(hb, "/v1/topics", 400, "INVALID_PARTITIONS", method="POST",
                 body={"name": unique("bad"), "partitions": 0})
    expect_error(hb, "/v1/topics", 400, "malformed JSON body", method="POST", body={"nom": "x"})
    # Configs: a bad value is refused and nothing changes; a good one is what AdminClient sees.
    path = "/v1/configs/topics/" + topic
    expect_error(hb, path, 400, "INVALID_CONFIG", "retention.ms", method="PATCH",
                 body={"configs": {"retention.ms": "soon"}})
    expect_error(hb, path, 400, "INVALID_CONFIG", "no.such.key", method="PATCH",
                 body={"configs": {"no.such.key": "1"}})
    doc = send(hb, "PATCH", path + "?validate_only=true", {"configs": {"retention.ms": "5000"}})
    assert doc["validate_only"] is True
    res = ConfigResource(ResourceType.TOPIC, topic)
    assert a.describe_configs([res])[res].result(10)["retention.ms"].value == "86400000"
    doc = send(hb, "PATCH", path, {"configs": {"retention.ms": "3600000", "cleanup.policy": "compact"}})
    check_schema(spec, response_schema(spec, "/v1/configs/topics/{name}", "patch", "200"), doc, "alter")
    got = a.describe_configs([res])[res].result(10)
    assert got["retention.ms"].value == "3600000" and got["cleanup.policy"].value == "compact"
    send(hb, "PATCH", path, {"configs": {"cleanup.policy": None}})
    assert a.describe_configs([res])[res].result(10)["cleanup.policy"].value == "delete"
    # Partitions: grow, and the broker's refusal to shrink.
    doc = send(hb, "POST", f"/v1/topics/{topic}/partitions", {"count": 3})
    assert doc["partition_count"] == 3
    ck.wait_for_topic(a, topic, 3)
    expect_error(hb, f"/v1/topics/{topic}/partitions", 400, "INVALID_PARTITIONS", method="POST",
                 body={"count": 1})
    expect_error(hb, f"/v1/topics/{unique('missing')}/partitions", 404, "UNKNOWN_TOPIC_OR_PARTITION",
                 method="POST", body={"count": 5})
    # Delete.
    doc = send(hb, "DELETE", "/v1/topics/" + topic, None)
    assert doc == {"deleted": topic}
    expect_error(hb, "/v1/topics/" + topic, 404, method="DELETE")
    get_json(hb, "/v1/topics/" + topic, 404)


def console_topic(hb, prefix):
    """A 2-partition topic created through the API; (name, a producer, now in ms)."""
    topic = unique(prefix)
    send(hb, "POST", "/v1/topics", {"name": topic, "partitions": 2}, 201)
    ck.wait_for_topic(ck.admin(hb), topic, 2)
    return topic, ck.producer(hb), int(time.time() * 1000)


def test_console_produce_and_read_records(hb):
    spec = load_spec()
    topic, p, t0 = console_topic(hb, "records")
    d = ck.produce_all(p, topic, [{"value": f"old{i}".encode(), "timestamp": t0 - 60_000 + i} for i in range(5)],
                       partition=0)
    assert d.failed == []
    d = ck.produce_all(p, topic, [{"value": bytes([0xff, i]), "timestamp": t0 + i} for i in range(5)], partition=1)
    assert d.failed == []
    def values(doc):
        return [base64.b64decode(r["value"]) for r in doc["records"]]
    schema = response_schema(spec, "/v1/topics/{name}/records", "get", "200")
    doc = get_json(hb, f"/v1/topics/{topic}/records?partition=0&order=oldest")
    check_schema(spec, schema, doc, "records")
    assert values(doc) == [f"old{i}".encode() for i in range(5)]
    doc = get_json(hb, f"/v1/topics/{topic}/records?partition=0&limit=2")
    assert values(doc) == [b"old4", b"old3"] and doc["order"] == "newest"
    doc = get_json(hb, f"/v1/topics/{topic}/records?partition=0&offset=2&order=oldest&limit=2")
    assert [r["offset"] for r in doc["records"]] == [2, 3]
    doc = get_json(hb, f"/v1/topics/{topic}/records?partition=0&offset=2&limit=5")
    assert [r["offset"] for r in doc["records"]] == [2, 1, 0]
    # From a time: partition 1's records are newer than partition 0's.
    doc = get_json(hb, f"/v1/topics/{topic}/records?timestamp={t0}&order=oldest")
    check_schema(spec, schema, doc, "records")
    assert values(doc)[:5] == [bytes([0xff, i]) for i in range(5)]
    assert all(r["timestamp"] >= t0 for r in doc["records"])
    doc = send(hb, "POST", f"/v1/topics/{topic}/records",
               {"key": "k", "value": '{"a": 1}', "headers": [{"key": "h", "value": "v"}, {"key": "n", "value": None}]},
               201)
    check_schema(spec, response_schema(spec, "/v1/topics/{name}/records", "post", "201"), doc, "produce")
    # The key's partition is the one Kafka's Java producer picks (murmur2).
    java = ck.producer(hb, **{"partitioner": "murmur2_random"})
    d = ck.produce_all(java, topic, [{"key": b"k", "value": b"probe"}])
    assert d.failed == [] and doc["partition"] == d.ok[0][0]
    # A Kafka consumer reads what the console produced.
    c = ck.consumer(hb, **{"group.id": unique("rd")})
    c.assign([TopicPartition(topic, doc["partition"], doc["offset"])])
    m = None
    deadline = time.monotonic() + 15
    while m is None and time.monotonic() < deadline:
        m = c.poll(0.5)
    c.close()
    assert m is not None and m.key() == b"k" and m.value() == b'{"a": 1}'
    assert m.headers() == [("h", b"v"), ("n", None)]

    # All partitions, newest first, merged by time.
    doc = get_json(hb, f"/v1/topics/{topic}/records?limit=500")
    ts = [r["timestamp"] for r in doc["records"]]
    assert ts == sorted(ts, reverse=True) and len(ts) == 12
    r = next(r for r in doc["records"] if r["headers"])
    assert r["headers"] == [{"key": "h", "value": base64.b64encode(b"v").decode()}, {"key": "n", "value": None}]
    for bad, word in [("limit=0", "limit"), ("limit=501", "limit"), ("order=up", "order"), ("offset=x", "offset"),
                      ("offset=1&timestamp=1", "not both"), ("partition=-1", "partition")]:
        expect_error(hb, f"/v1/topics/{topic}/records?{bad}", 400, word)
    expect_error(hb, f"/v1/topics/{topic}/records?partition=7", 404, "partition 7")
    expect_error(hb, f"/v1/topics/{unique('missing')}/records", 404, "unknown topic")
    expect_error(hb, f"/v1/topics/{topic}/records", 404, "partition 9", method="POST", body={"partition": 9})


@pytest.mark.timeout_s(60)
def test_console_offset_reset_previews_and_is_refused_while_members(hb):
    spec = load_spec()
    topic, p, t0 = console_topic(hb, "reset")
    for part in (0, 1):
        d = ck.produce_all(p, topic, [{"value": b"x", "timestamp": t0 + i * 1000} for i in range(10)], partition=part)
        assert d.failed == []
    group = unique("rg")
    c = ck.consumer(hb, **{"group.id": group})
    c.commit(offsets=[TopicPartition(topic, 0, 7), TopicPartition(topic, 1, 9)], asynchronous=False)
    c.close()
    url = f"/v1/groups/{q(group)}/offsets/reset"
    schema = response_schema(spec, "/v1/groups/{id}/offsets/reset", "post", "200")
    doc = send(hb, "POST", url, {"to": "earliest", "dry_run": True})
    check_schema(spec, schema, doc, "reset")
    assert [(o["partition"], o["current_offset"], o["new_offset"]) for o in doc["offsets"]] == [(0, 7, 0), (1, 9, 0)]
    g = get_json(hb, f"/v1/groups/{q(group)}")
    assert g["total_lag"] == 3 + 1, "a dry run commits nothing"
    doc = send(hb, "POST", url, {"to": "timestamp", "value": t0 + 4500, "topic": topic})
    assert [o["new_offset"] for o in doc["offsets"]] == [5, 5]
    assert get_json(hb, f"/v1/groups/{q(group)}")["total_lag"] == 10
    doc = send(hb, "POST", url, {"to": "offset", "value": 1000})
    assert [o["new_offset"] for o in doc["offsets"]] == [10, 10], "clamped to the log end"
    send(hb, "POST", url, {"to": "latest"})
    assert get_json(hb, f"/v1/groups/{q(group)}")["total_lag"] == 0
    # What a Kafka client reads back.
    c = ck.consumer(hb, **{"group.id": group})
    got = c.committed([TopicPartition(topic, 0), TopicPartition(topic, 1)], timeout=10)
    c.close()
    assert [t.offset for t in got] == [10, 10]
    expect_error(hb, url, 400, "earliest, latest", method="POST", body={"to": "soon"})
    expect_error(hb, url, 400, "needs a 'value'", method="POST", body={"to": "offset"})
    expect_error(hb, f"/v1/groups/{unique('nogroup')}/offsets/reset", 404, "unknown group", method="POST",
                 body={"to": "earliest"})
    # With a live member: a preview is fine, a reset is refused.
    live = Consumer({"bootstrap.servers": hb.bootstrap, "group.id": group, "session.timeout.ms": 10000,
                     "log_level": 3})
    try:
        live.subscribe([topic])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not get_json(hb, f"/v1/groups/{q(group)}")["members"]:
            live.poll(0.2)
        send(hb, "POST", url, {"to": "earliest", "dry_run": True})
        expect_error(hb, url, 409, "member", method="POST", body={"to": "earliest"})
    finally:
        live.close()
    assert get_json(hb, f"/v1/groups/{q(group)}")["total_lag"] == 0, "the refused reset changed nothing"


@pytest.mark.timeout_s(120)
def test_console_views_of_a_replicated_cluster(tmp_path):
    """Three nodes, the API on node 1: every broker with its fenced flag, the quorum,
    replicas and ISR from the replica state, and a dead node shown fenced and out of
    the ISR (what the console's overview and partition tables show)."""
    from cluster import Cluster, free_ports
    c = Cluster(tmp_path)
    (port,) = free_ports(1)
    node1 = c.node(1)
    argv = node1.argv
    node1.argv = lambda: argv() + ["--set", f"http.listeners=127.0.0.1:{port}"]
    node1.http_port = port
    node1.url = lambda path: f"http://127.0.0.1:{port}{path}"
    # Node 1 prints a second start-up line (the HTTP listener): read both.
    node1._read_first_line = HttpBroker._read_first_line.__get__(node1)
    c.start()
    try:
        # Each node is ready once it serves; node 1's image lists the others once their
        # registrations reach it (a moment later on a loaded machine), as in Kafka.
        def settled():
            d = get_json(node1, "/v1/brokers")
            whole = (len(d["brokers"]) == 3 and not any(b["fenced"] for b in d["brokers"])
                     and d["quorum"]["leader"] in (1, 2, 3))
            return d if whole else None
        doc = c.wait_for("node 1's image with three unfenced brokers and a quorum leader", settled)
        check_schema(load_spec(), response_schema(load_spec(), "/v1/brokers", "get", "200"), doc, "brokers")
        assert [b["node_id"] for b in doc["brokers"]] == [1, 2, 3]
        assert doc["quorum"]["voters"] == [1, 2, 3]
        assert doc["quorum"]["leader"] in (1, 2, 3)
        assert len(doc["bootstrap_servers"].split(",")) == 3
        topic = unique("replicated")
        send(node1, "POST", "/v1/topics", {"name": topic, "partitions": 2, "replication_factor": 3}, 201)
        c.wait_for("the topic fully in sync", lambda: all(
            len(p["isr"]) == 3 for p in get_json(node1, "/v1/topics/" + topic)["partitions"]))
        t = get_json(node1, "/v1/topics/" + topic)
        assert t["replication_factor"] == 3
        assert all(sorted(p["replicas"]) == [1, 2, 3] and p["leader"] in (1, 2, 3) for p in t["partitions"])
        c.node(3).kill9()
        c.wait_for("node 3 fenced", lambda: next(
            b for b in get_json(node1, "/v1/brokers")["brokers"] if b["node_id"] == 3)["fenced"])
        c.wait_for("node 3 out of every ISR", lambda: all(
            3 not in p["isr"] and p["leader"] != 3 for p in get_json(node1, "/v1/topics/" + topic)["partitions"]))
        live = get_json(node1, "/v1/brokers")["bootstrap_servers"].split(",")
        assert f"127.0.0.1:{c.node(3).fixed_port}" not in live and len(live) == 2
    finally:
        problems = c.stop()
        assert not problems, "\n".join(problems)
