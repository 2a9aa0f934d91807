"""Client quotas: AlterClientQuotas / DescribeClientQuotas (raw frames through kwire,
v0: confluent-kafka's Python AdminClient has no client-quota calls), their persistence,
and enforcement as Kafka does it (windowed rate, throttle_time_ms, muted channel).

Over PLAINTEXT the quota user is ANONYMOUS; over SASL it is the authenticated user's
name (`test_user_quota_throttles_its_user_and_not_another`: alice capped, bob not).
"""

import struct
import time

import pytest
from confluent_kafka import Producer

import ck
import kwire
from harness import unique

ALTER_CLIENT_QUOTAS = 49
DESCRIBE_CLIENT_QUOTAS = 48
MATCH_EXACT, MATCH_DEFAULT, MATCH_SPECIFIED = 0, 1, 2


def alter(conn, entries, validate_only=False):
    """entries: [(entity [(type, name or None)], ops [(key, value or None to remove)])].
    Returns [(error_code, message)] per entry."""
    body = struct.pack(">i", len(entries))
    for entity, ops in entries:
        body += struct.pack(">i", len(entity))
        for t, n in entity:
            body += kwire.string(t) + kwire.string(n)
        body += struct.pack(">i", len(ops))
        for k, v in ops:
            body += kwire.string(k) + struct.pack(">db", v or 0.0, 1 if v is None else 0)
    body += struct.pack(">b", 1 if validate_only else 0)
    r = conn.request(ALTER_CLIENT_QUOTAS, 0, body)
    r.int32()  # throttle
    out = []
    for _ in range(r.int32()):
        code, msg = r.int16(), r.string()
        for _ in range(r.int32()):
            r.string()
            r.string()
        out.append((code, msg))
    return out


def describe(conn, components, strict=False):
    """components: [(type, match_type, name)]. Returns (error, {entity: {key: value}})."""
    body = struct.pack(">i", len(components))
    for t, m, n in components:
        body += kwire.string(t) + struct.pack(">b", m) + kwire.string(n)
    body += struct.pack(">b", 1 if strict else 0)
    r = conn.request(DESCRIBE_CLIENT_QUOTAS, 0, body)
    r.int32()
    err = r.int16()
    r.string()
    found = {}
    n = r.int32()
    for _ in range(max(n, 0)):
        entity = tuple(sorted((r.string(), r.string()) for _ in range(r.int32())))
        values = {}
        for _ in range(r.int32()):
            k = r.string()
            (v,) = struct.unpack(">d", r.take(8))
            values[k] = v
        found[entity] = values
    return err, found


USER_ANON = [("user", "ANONYMOUS")]
DEFAULT_USER = [("user", None)]
USER_AND_CLIENT = [("user", "ANONYMOUS"), ("client-id", "c1")]


@pytest.mark.parametrize("entity", [USER_ANON, DEFAULT_USER, [("client-id", "c1")],
                                    USER_AND_CLIENT, [("client-id", None)]])
def test_alter_and_describe_each_entity_kind(broker, entity):
    with kwire.Conn("127.0.0.1", broker.port) as c:
        assert alter(c, [(entity, [("producer_byte_rate", 2048.0),
                                   ("consumer_byte_rate", 4096.0)])]) == [(0, None)]
        err, found = describe(c, [(t, MATCH_EXACT if n else MATCH_DEFAULT, n)
                                  for t, n in entity], strict=True)
        assert err == 0
        assert found == {tuple(sorted(entity)): {"producer_byte_rate": 2048.0,
                                                 "consumer_byte_rate": 4096.0}}
        # Remove one key, then the other: the entity disappears.
        assert alter(c, [(entity, [("consumer_byte_rate", None)])]) == [(0, None)]
        assert describe(c, [(t, MATCH_SPECIFIED if n else MATCH_DEFAULT, None)
                            for t, n in entity], strict=True)[1] == \
            {tuple(sorted(entity)): {"producer_byte_rate": 2048.0}}
        assert alter(c, [(entity, [("producer_byte_rate", None)])]) == [(0, None)]
        assert describe(c, [(t, MATCH_SPECIFIED if n else MATCH_DEFAULT, None)
                            for t, n in entity], strict=True)[1] == {}


def test_bad_quota_requests_are_refused_by_name(broker):
    INVALID_REQUEST = 42
    with kwire.Conn("127.0.0.1", broker.port) as c:
        out = alter(c, [([("user", "u")], [("bogus_rate", 1.0)]),
                        ([("ip", "1.2.3.4")], [("producer_byte_rate", 1.0)]),
                        ([("user", "u")], [("producer_byte_rate", -5.0)]),
                        ([("user", "u"), ("user", "v")], [("producer_byte_rate", 1.0)])])
        assert [code for code, _ in out] == [INVALID_REQUEST] * 4
        assert "bogus_rate" in out[0][1] and "ip" in out[1][1]
        # validate_only stores nothing.
        assert alter(c, [([("user", "vo")], [("producer_byte_rate", 1.0)])],
                     validate_only=True) == [(0, None)]
        assert describe(c, [("user", MATCH_EXACT, "vo")])[1] == {}


def test_quotas_survive_a_restart(start_broker):
    b = start_broker()
    with kwire.Conn("127.0.0.1", b.port) as c:
        assert alter(c, [([("user", "kept")], [("request_percentage", 50.0)])]) == [(0, None)]
    b.restart()
    with kwire.Conn("127.0.0.1", b.port) as c:
        assert describe(c, [("user", MATCH_EXACT, "kept")])[1] == \
            {(("user", "kept"),): {"request_percentage": 50.0}}


def test_acl_gate_on_quota_apis(start_broker):
    CLUSTER_AUTHORIZATION_FAILED = 31
    b = start_broker(authorizer__class__name="org.apache.kafka.metadata.authorizer.StandardAuthorizer")
    with kwire.Conn("127.0.0.1", b.port) as c:
        assert alter(c, [(USER_ANON, [("producer_byte_rate", 1.0)])])[0][0] == \
            CLUSTER_AUTHORIZATION_FAILED
        assert describe(c, [])[0] == CLUSTER_AUTHORIZATION_FAILED


RATE = 1048576
WINDOW_S = 11  # quota.window.num (11) x quota.window.size.seconds (1)


def test_producer_is_held_to_producer_byte_rate(start_broker):
    """A greedy producer capped at 1 MiB/s gets within 10 % of it, measured over two
    whole quota windows (22 s) from its first acknowledged record, and sees
    throttle_time_ms. Kafka's windowed rate lets a window's worth of bytes through at
    once and holds the client back until it ages out, so the rate is only meaningful
    over whole windows; the per-second series is printed."""
    import collections
    import json

    b = start_broker()
    topic = ck.create_topic(b, unique("quota"))
    client = unique("capped")
    with kwire.Conn("127.0.0.1", b.port) as c:
        assert alter(c, [([("client-id", client)], [("producer_byte_rate", float(RATE))])]) \
            == [(0, None)]
    stats = []
    acked = []  # (time, bytes)
    p = Producer({"bootstrap.servers": b.bootstrap, "client.id": client, "acks": 1,
                  "linger.ms": 5, "batch.size": 65536, "compression.type": "none",
                  "statistics.interval.ms": 1000, "queue.buffering.max.kbytes": 8192,
                  "stats_cb": stats.append})
    value = b"x" * 4000

    def on_delivery(err, msg):
        if err is None:
            acked.append((time.monotonic(), len(msg.value())))

    measure_s = 2 * WINDOW_S
    deadline = time.monotonic() + measure_s + 10
    while time.monotonic() < deadline and (not acked or time.monotonic() < acked[0][0] + measure_s):
        try:
            p.produce(topic, value, on_delivery=on_delivery)
        except BufferError:
            p.poll(0.05)
        p.poll(0)
    p.flush(30)
    assert acked, "nothing was acknowledged"
    t0 = acked[0][0]
    total = sum(n for t, n in acked if t < t0 + measure_s)
    rate = total / measure_s
    per_s = collections.Counter(int(t - t0) for t, _ in acked)
    print(f"measured {rate:.0f} B/s over {measure_s} s (quota {RATE}, {rate / RATE:.3f}x); "
          f"KB per second: {[per_s[i] * len(value) // 1000 for i in range(measure_s)]}")
    assert abs(rate - RATE) <= 0.10 * RATE, rate
    # librdkafka reports the broker's throttle_time_ms in its statistics.
    throttle_max = max((br["throttle"]["max"] for s in stats
                        for br in json.loads(s)["brokers"].values() if "throttle" in br),
                       default=0)
    assert throttle_max > 0, "no throttle_time_ms seen"


def create_topic_v6(conn, name, partitions):
    """CreateTopics v6 (flexible; KIP-599's strict version) for one topic.
    -> (throttle_time_ms, error_code)"""
    body = kwire.uvarint(2) + kwire.compact_string(name) + struct.pack(">ih", partitions, 1)
    body += kwire.uvarint(1) + kwire.uvarint(1) + kwire.uvarint(0)  # assignments, configs, tags
    body += struct.pack(">ib", 10000, 0) + kwire.uvarint(0)
    r = conn.request(19, 6, body, header_version=2)
    r.uvarint()  # response header tags
    throttle = r.int32()
    assert r.uvarint() == 2  # one topic
    r.take(r.uvarint() - 1)  # name
    return throttle, r.int16()


def test_controller_mutation_rate_refuses_with_throttling_quota_exceeded(broker):
    THROTTLING_QUOTA_EXCEEDED = 89
    client = "runnel-tests"  # kwire's client id
    with kwire.Conn("127.0.0.1", broker.port) as c:
        assert alter(c, [([("client-id", client)], [("controller_mutation_rate", 1.0)])]) \
            == [(0, None)]
        try:
            # 12 partitions against 1 a second (a 10 s window allows 10): accepted, throttled.
            throttle, err = create_topic_v6(c, unique("m1"), 12)
            assert err == 0 and throttle > 0, (throttle, err)
            # The quota is used up: the next creation is refused, with the wait.
            t0 = time.monotonic()
            throttle, err = create_topic_v6(c, unique("m2"), 1)
            assert err == THROTTLING_QUOTA_EXCEEDED and throttle > 0, (throttle, err)
            # The channel was muted for the first throttle before this request was read.
            assert time.monotonic() - t0 >= 0.5
        finally:
            alter(c, [([("client-id", client)], [("controller_mutation_rate", None)])])


def test_consumer_byte_rate_throttles_consumers_and_mutes_the_channel(broker):
    client = "runnel-tests"
    topic = ck.create_topic(broker, unique("cq"))
    p = Producer({"bootstrap.servers": broker.bootstrap})
    for _ in range(50):
        p.produce(topic, b"y" * 4000)
    p.flush(10)
    with kwire.Conn("127.0.0.1", broker.port) as c:
        assert alter(c, [([("client-id", client)], [("consumer_byte_rate", 16000.0)])]) \
            == [(0, None)]
        try:
            first = c.fetch_v11(topic, 0, 0)
            assert first["error"] == 0 and first["batches"]
            # ~200 KB against 16 KB/s over a 10 s window: throttled, and the connection's
            # next request waits out the mute.
            assert first["throttle_time_ms"] > 1000, first["throttle_time_ms"]
            t0 = time.monotonic()
            c.api_versions_v0()
            waited = time.monotonic() - t0
            assert waited >= first["throttle_time_ms"] / 1000 * 0.8, waited
        finally:
            alter(c, [([("client-id", client)], [("consumer_byte_rate", None)])])


def test_runnel_quotas_cli_alter_and_describe(broker):
    import subprocess

    from harness import runnel_bin

    def run(*args):
        return subprocess.run([runnel_bin(), "quotas", *args, "-b", broker.bootstrap],
                              capture_output=True, text=True, timeout=60)

    user = unique("alice")
    r = run("--alter", "--entity-type", "users", "--entity-name", user, "--add-config",
            "producer_byte_rate=1048576,consumer_byte_rate=2097152")
    assert r.returncode == 0, r.stderr
    assert f"Completed updating config for user-principal '{user}'." in r.stdout
    r = run("--describe", "--entity-type", "users", "--entity-name", user)
    assert r.stdout.strip() == (f"Quota configs for user-principal '{user}' are "
                                "consumer_byte_rate=2097152.0, producer_byte_rate=1048576.0"), r.stdout
    r = run("--alter", "--user", user, "--client-defaults", "--add-config",
            "request_percentage=50")
    assert r.returncode == 0, r.stderr
    with kwire.Conn("127.0.0.1", broker.port) as c:
        found = describe(c, [("user", MATCH_EXACT, user)])[1]
    assert found[(("client-id", None), ("user", user))] == {"request_percentage": 50.0}
    r = run("--alter", "--entity-type", "users", "--entity-name", user, "--delete-config",
            "consumer_byte_rate")
    assert r.returncode == 0, r.stderr
    r = run("--describe", "--entity-type", "users", "--entity-name", user)
    assert "consumer_byte_rate" not in r.stdout and "producer_byte_rate=1048576.0" in r.stdout
    r = run("--alter", "--user", user, "--add-config", "bogus_rate=1")
    assert r.returncode == 1 and "bogus_rate" in r.stderr, r.stderr


def test_request_percentage_mutes_the_connection(start_broker):
    """request_percentage counts handler time; a tiny quota mutes the connection after a
    request. A 2 x 1 s quota window (quota.window.num/size.seconds) caps the mute at 2 s."""
    b = start_broker(quota__window__num="2", quota__window__size__seconds="1")
    with kwire.Conn("127.0.0.1", b.port) as c:
        start = time.monotonic()
        for _ in range(5):
            c.api_versions_v0()
        unthrottled = time.monotonic() - start
        # The client id is kwire's; the quota is set on another connection so this one's
        # own AlterClientQuotas is not the request that gets muted.
        with kwire.Conn("127.0.0.1", b.port) as admin_conn:
            assert alter(admin_conn, [([("client-id", "runnel-tests")],
                                       [("request_percentage", 0.000001)])]) == [(0, None)]
        c.api_versions_v0()  # recorded against the quota, then the channel is muted
        start = time.monotonic()
        c.api_versions_v0()
        muted = time.monotonic() - start
    print(f"5 requests unthrottled: {unthrottled:.3f} s; one request after a throttled one: "
          f"{muted:.3f} s")
    assert unthrottled < 0.5 and 0.5 <= muted <= 2.5, (unthrottled, muted)


def test_user_quota_throttles_its_user_and_not_another(start_broker):
    """A `user` quota applies to the SASL principal's name: alice (consumer_byte_rate
    16 KB/s) is throttled and muted on her Fetch; bob, on the same broker and topic with
    no quota, is not."""
    from confluent_kafka.admin import AdminClient, NewTopic
    from test_acls import ADMIN, ALICE, BOB, broker_conf, client_conf, raw_conn

    b = start_broker(broker_conf(ALICE))
    topic = unique("uq")
    a = AdminClient({"bootstrap.servers": b.bootstrap, **client_conf(ADMIN)})
    for f in a.create_topics([NewTopic(topic, 1, 1)]).values():
        f.result(20)
    ck.wait_for_topic(a, topic, 1)
    p = Producer({"bootstrap.servers": b.bootstrap, **client_conf(ADMIN)})
    for _ in range(50):
        p.produce(topic, b"y" * 4000)
    assert p.flush(20) == 0
    with raw_conn(b, ADMIN) as c:
        assert alter(c, [([("user", "alice")], [("consumer_byte_rate", 16000.0)])]) \
            == [(0, None)]
    with raw_conn(b, BOB) as c:
        for _ in range(2):
            r = c.fetch_v11(topic, 0, 0)
            assert r["error"] == 0 and r["batches"]
            assert r["throttle_time_ms"] == 0, r["throttle_time_ms"]
    with raw_conn(b, ALICE) as c:
        first = c.fetch_v11(topic, 0, 0)
        assert first["error"] == 0 and first["batches"]
        # ~200 KB against 16 KB/s over the 10 s window: throttled, and the next request
        # waits out the mute.
        assert first["throttle_time_ms"] > 1000, first["throttle_time_ms"]
        t0 = time.monotonic()
        c.api_versions_v0()
        assert time.monotonic() - t0 >= first["throttle_time_ms"] / 1000 * 0.8


def test_request_percentage_throttle_is_in_the_response(start_broker):
    """Kafka tells a client throttled by request_percentage in the throttled request's own
    response (throttle_time_ms), then mutes the channel for that long."""
    LIST_GROUPS = 16
    b = start_broker(quota__window__num="2", quota__window__size__seconds="1")
    with kwire.Conn("127.0.0.1", b.port) as c:
        r = c.request(LIST_GROUPS, 1, b"")
        assert r.int32() == 0 and r.int16() == 0  # unthrottled: 0
        with kwire.Conn("127.0.0.1", b.port) as admin_conn:
            assert alter(admin_conn, [([("client-id", "runnel-tests")],
                                       [("request_percentage", 0.000001)])]) == [(0, None)]
        r = c.request(LIST_GROUPS, 1, b"")
        throttle = r.int32()
        assert r.int16() == 0
        # Handler time against a near-zero quota: throttled up to the 2 s window.
        assert 0 < throttle <= 2000, throttle
        start = time.monotonic()
        c.request(LIST_GROUPS, 1, b"")
        assert time.monotonic() - start >= throttle / 1000 * 0.8
