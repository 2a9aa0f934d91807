"""Authorization (Kafka's StandardAuthorizer semantics) through librdkafka's AdminClient,
Producer and Consumer.

The matrix runs over resources and operations for each of `PRINCIPALS`: User:ANONYMOUS
over PLAINTEXT (its own super user while the ACLs are made), and User:alice over
SASL_PLAINTEXT/PLAIN, with User:admin (a super user) making the ACLs and User:bob (no
ACL) refused what alice is allowed. A test takes its client settings from
`client_conf(principal)` and its broker's listener settings from `broker_conf(principal)`.
"""

import struct
import time

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
    ResourcePatternType,
    ResourceType,
)

import ck
import kwire
from harness import unique

AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
ANONYMOUS = "User:ANONYMOUS"
ADMIN, ALICE, BOB = "User:admin", "User:alice", "User:bob"
# Principals the matrix runs for.
PRINCIPALS = [ANONYMOUS, ALICE]
SASL_USERS = {"admin": "admin-secret", "alice": "alice-secret", "bob": "bob-secret"}
SASL_JAAS = ("org.apache.kafka.common.security.plain.PlainLoginModule required "
             'username="admin" password="admin-secret" '
             + " ".join(f'user_{u}="{p}"' for u, p in SASL_USERS.items()) + ";")
SASL_HANDSHAKE, SASL_AUTHENTICATE = 17, 36


def client_conf(principal):
    """librdkafka settings that make a client authenticate as `principal`."""
    if principal == ANONYMOUS:
        return {}
    user = principal.split(":", 1)[1]
    return {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN",
            "sasl.username": user, "sasl.password": SASL_USERS[user]}


def broker_conf(principal):
    """Broker settings whose (only) listener `principal` can authenticate on."""
    if principal == ANONYMOUS:
        return {}
    return {"listeners": "SASL_PLAINTEXT://127.0.0.1:0",
            "listener.security.protocol.map": "SASL_PLAINTEXT:SASL_PLAINTEXT",
            "sasl.enabled.mechanisms": "PLAIN",
            "sasl.mechanism.inter.broker.protocol": "PLAIN",
            "sasl.jaas.config": SASL_JAAS}


def super_user(principal):
    """Who makes a test's topics and ACLs: ANONYMOUS itself (made super for a while)
    over PLAINTEXT, User:admin over SASL."""
    return principal if principal == ANONYMOUS else ADMIN


def raw_conn(b, principal=ANONYMOUS):
    """A kwire connection authenticated as `principal` (SASL PLAIN v1 when not ANONYMOUS)."""
    c = kwire.Conn("127.0.0.1", b.port)
    if principal != ANONYMOUS:
        conf = client_conf(principal)
        assert c.request(SASL_HANDSHAKE, 1, kwire.string("PLAIN")).int16() == 0
        token = b"\0" + conf["sasl.username"].encode() + b"\0" + conf["sasl.password"].encode()
        assert c.request(SASL_AUTHENTICATE, 1, kwire.nbytes(token)).int16() == 0
    return c


def kcat_conf(principal):
    return [x for k, v in client_conf(principal).items() for x in ("-X", f"{k}={v}")]


def admin(b, principal=ANONYMOUS):
    from confluent_kafka.admin import AdminClient

    return AdminClient({"bootstrap.servers": b.bootstrap, **client_conf(principal)})


def allow(principal, rtype, name, op, pattern=ResourcePatternType.LITERAL, host="*"):
    return AclBinding(rtype, name, pattern, principal, host, op, AclPermissionType.ALLOW)


def deny(principal, rtype, name, op, pattern=ResourcePatternType.LITERAL, host="*"):
    return AclBinding(rtype, name, pattern, principal, host, op, AclPermissionType.DENY)


def create_acls(a, bindings):
    for f in a.create_acls(bindings, request_timeout=10).values():
        f.result()


def produce_one(b, topic, principal=ANONYMOUS, **conf):
    """Produces one record; returns None or the delivery error code."""
    p = Producer({"bootstrap.servers": b.bootstrap, "message.timeout.ms": 5000,
                  **client_conf(principal), **conf})
    errors = []
    p.produce(topic, b"v", on_delivery=lambda err, msg: errors.append(err))
    p.flush(10)
    assert errors, "no delivery report"
    return errors[0].code() if errors[0] else None


def consume_error(b, topic, group, principal=ANONYMOUS, subscribe=True, timeout=10):
    """Reads from `topic`; returns "ok" once a record arrives, else the first error code."""
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": group,
                  "auto.offset.reset": "earliest", "enable.auto.commit": False,
                  **client_conf(principal)})
    try:
        if subscribe:
            c.subscribe([topic])
        else:
            c.assign([TopicPartition(topic, 0, 0)])
        deadline = time.time() + timeout
        while time.time() < deadline:
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    continue
                return m.error().code()
            return "ok"
        return "timeout"
    finally:
        c.close()


def kafka_error(fut):
    with pytest.raises(KafkaException) as e:
        fut.result()
    return e.value.args[0].code()


def test_acl_apis_answer_security_disabled_without_an_authorizer(broker):
    a = ck.admin(broker)
    futs = a.create_acls([allow(ANONYMOUS, ResourceType.TOPIC, "t", AclOperation.READ)],
                         request_timeout=10)
    for f in futs.values():
        assert kafka_error(f) == KafkaError.SECURITY_DISABLED


def test_unknown_authorizer_class_is_a_config_error(tmp_path):
    import subprocess

    from harness import runnel_bin

    r = subprocess.run([runnel_bin(), "server", "--set", "listeners=PLAINTEXT://127.0.0.1:0",
                        "--set", f"log.dirs={tmp_path}",
                        "--set", "authorizer.class.name=com.example.Nope"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert "authorizer.class.name" in r.stderr and "StandardAuthorizer" in r.stderr, r.stderr


@pytest.mark.parametrize("principal", PRINCIPALS)
def test_acl_matrix_over_resources_and_operations(start_broker, principal):
    me, su = principal, super_user(principal)
    T, G, TX, C = (ResourceType.TOPIC, ResourceType.GROUP, ResourceType.TRANSACTIONAL_ID,
                   ResourceType.BROKER)
    PRE = ResourcePatternType.PREFIXED
    # 1. As a super user: topics, data, and the ACLs.
    b = start_broker({**broker_conf(me), "authorizer.class.name": AUTHORIZER,
                      "super.users": su})
    a = admin(b, su)
    for t in ("ok-1", "no-1", "dw-x", "host-1", "h127-1", "lit-1"):
        for f in a.create_topics([NewTopic(t, 1, 1)]).values():
            f.result()
        assert produce_one(b, t, su) is None
    acls = [
        allow(me, T, "ok-", AclOperation.ALL, PRE),
        allow(me, T, "lit-1", AclOperation.READ),
        allow(me, T, "dw-", AclOperation.ALL, PRE),
        deny(me, T, "dw-x", AclOperation.WRITE),
        allow(me, T, "host-", AclOperation.ALL, PRE, host="10.9.9.9"),
        allow(me, T, "h127-", AclOperation.ALL, PRE, host="127.0.0.1"),
        allow(me, G, "g-ok", AclOperation.READ),
        allow(me, TX, "tx-ok", AclOperation.ALL, PRE),
        allow(me, C, "kafka-cluster", AclOperation.DESCRIBE),
        allow(me, C, "kafka-cluster", AclOperation.ALTER),
    ]
    create_acls(a, acls)
    # 2. The same broker restarted (without ANONYMOUS as super user): the ACLs persisted
    # and decide.
    if su == me:
        b.configs["super.users"] = ""
    b.restart()
    a = admin(b, me)
    everything = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None,
                                  AclOperation.ANY, AclPermissionType.ANY)
    assert len(a.describe_acls(everything, request_timeout=10).result()) == len(acls)
    match_ok1 = AclBindingFilter(T, "ok-1", ResourcePatternType.MATCH, None, None,
                                 AclOperation.ANY, AclPermissionType.ANY)
    assert [x.name for x in a.describe_acls(match_ok1, request_timeout=10).result()] == ["ok-"]

    # Metadata shows only what the principal may DESCRIBE.
    listed = set(a.list_topics(timeout=10).topics)
    assert {"ok-1", "dw-x", "h127-1", "lit-1"} <= listed
    assert not listed & {"no-1", "host-1"}, listed

    # Produce: prefixed allow, no ACL, DENY over a prefixed ALLOW, host match, READ only.
    assert produce_one(b, "ok-1", me) is None
    assert produce_one(b, "h127-1", me) is None
    for t in ("no-1", "dw-x", "host-1", "lit-1"):
        assert produce_one(b, t, me) == KafkaError.TOPIC_AUTHORIZATION_FAILED, t

    # Fetch: READ on the topic (raw Fetch v11, as the partition's client would send it).
    assert consume_error(b, "lit-1", "g-ok", me, subscribe=False) == "ok"
    with raw_conn(b, me) as c:
        assert c.fetch_v11("lit-1", 0, 0)["error"] == 0
        assert c.fetch_v11("no-1", 0, 0)["error"] == KafkaError.TOPIC_AUTHORIZATION_FAILED
        assert c.fetch_v11("dw-x", 0, 0)["error"] == 0  # DENY WRITE leaves READ

    # Groups: READ on the group.
    assert consume_error(b, "ok-1", "g-ok", me) == "ok"
    assert consume_error(b, "ok-1", "g-no", me) == KafkaError.GROUP_AUTHORIZATION_FAILED

    # Auto-creation needs CREATE (granted by ALL on "ok-" only).
    assert produce_one(b, "ok-auto", me) is None
    assert produce_one(b, "no-auto", me) == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert "no-auto" not in set(a.list_topics(timeout=10).topics)

    # Admin: CreateTopics needs CREATE, DeleteTopics DELETE.
    futs = a.create_topics([NewTopic("ok-new", 1, 1), NewTopic("no-new", 1, 1)])
    futs["ok-new"].result()
    assert kafka_error(futs["no-new"]) == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert kafka_error(a.delete_topics(["no-1"])["no-1"]) == \
        KafkaError.TOPIC_AUTHORIZATION_FAILED
    a.delete_topics(["ok-new"])["ok-new"].result()

    # Transactions: WRITE on the transactional id.
    p = Producer({"bootstrap.servers": b.bootstrap, "transactional.id": "tx-ok-1",
                  **client_conf(me)})
    p.init_transactions(15)
    p.begin_transaction()
    p.produce("ok-1", b"in-txn")
    p.commit_transaction(15)
    p = Producer({"bootstrap.servers": b.bootstrap, "transactional.id": "tx-no",
                  **client_conf(me)})
    with pytest.raises(KafkaException) as e:
        p.init_transactions(15)
    assert e.value.args[0].code() == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED

    # kcat (an old librdkafka) sees the same: reads "lit-1", is refused "no-1".
    from test_kcat import kcat
    r = kcat(b, *kcat_conf(me), "-C", "-t", "lit-1", "-o", "beginning", "-e", "-f", "%s\n")
    assert r.stdout.decode().split() == ["v"]
    r = kcat(b, *kcat_conf(me), "-P", "-t", "no-1", input=b"x\n", check=False)
    assert r.returncode != 0 and b"authorization failed" in r.stderr.lower(), r.stderr

    if me != ANONYMOUS:
        # A second authenticated principal with no ACL: nothing alice may do is open
        # to bob, and the super user passes everything.
        bob = admin(b, BOB)
        assert set(bob.list_topics(timeout=10).topics) == set()
        for t in ("ok-1", "lit-1", "h127-1"):
            assert produce_one(b, t, BOB) == KafkaError.TOPIC_AUTHORIZATION_FAILED, t
        # librdkafka asks for g-ok's coordinator first: the group refuses bob.
        assert consume_error(b, "lit-1", "g-ok", BOB, subscribe=False) == \
            KafkaError.GROUP_AUTHORIZATION_FAILED
        with raw_conn(b, BOB) as c:
            assert c.fetch_v11("lit-1", 0, 0)["error"] == KafkaError.TOPIC_AUTHORIZATION_FAILED
        assert kafka_error(bob.create_topics([NewTopic("ok-bob", 1, 1)])["ok-bob"]) == \
            KafkaError.TOPIC_AUTHORIZATION_FAILED
        # DescribeAcls is refused (CLUSTER_AUTHORIZATION_FAILED; librdkafka then reports
        # no ACLs rather than an error): bob learns none of alice's.
        assert bob.describe_acls(everything, request_timeout=10).result() == []
        assert "Principal = User:bob is Denied operation = DESCRIBE from host = 127.0.0.1 " \
               "on resource = Cluster:kafka-cluster for request = DescribeAcls" in b.log_tail(400)
        assert produce_one(b, "no-1", su) is None

    # DeleteAcls takes a grant away.
    deleted = a.delete_acls([AclBindingFilter(T, "ok-", PRE, None, None, AclOperation.ANY,
                                              AclPermissionType.ANY)],
                            request_timeout=10)
    assert [len(f.result()) for f in deleted.values()] == [1]
    assert produce_one(b, "ok-1", me) == KafkaError.TOPIC_AUTHORIZATION_FAILED


def test_super_user_and_allow_everyone_if_no_acl_found(start_broker):
    T = ResourceType.TOPIC
    b = start_broker(authorizer__class__name=AUTHORIZER, super__users=ANONYMOUS)
    a = admin(b)
    for t in ("free", "bobs"):
        for f in a.create_topics([NewTopic(t, 1, 1)]).values():
            f.result()
    create_acls(a, [deny(ANONYMOUS, T, "*", AclOperation.ALL),
                    allow("User:bob", T, "bobs", AclOperation.ALL)])
    # A super user passes even a DENY on everything.
    assert produce_one(b, "free") is None
    # Without it, allow.everyone.if.no.acl.found=true: only resources with no ACL at all
    # are open; "*" DENY covers every topic, so remove it first.
    b.configs.update({"super.users": "", "allow.everyone.if.no.acl.found": "true"})
    b.restart()
    a = admin(b)
    a.delete_acls([AclBindingFilter(T, "*", ResourcePatternType.LITERAL, None, None,
                                    AclOperation.ANY, AclPermissionType.DENY)],
                  request_timeout=10)
    time.sleep(0.5)
    assert produce_one(b, "free") is None
    assert produce_one(b, "bobs") == KafkaError.TOPIC_AUTHORIZATION_FAILED
    # And with it false, the ACL-less topic is closed too.
    b.configs["allow.everyone.if.no.acl.found"] = "false"
    b.restart()
    assert produce_one(b, "free") == KafkaError.TOPIC_AUTHORIZATION_FAILED


def test_denials_are_logged_counted_in_metrics_and_apply_to_the_http_api(tmp_path):
    import json
    import urllib.error
    import urllib.request

    from test_http import HttpBroker

    b = HttpBroker(tmp_path / "hb", {"authorizer.class.name": AUTHORIZER,
                                     "super.users": ANONYMOUS})
    b.start()
    try:
        a = admin(b)
        for f in a.create_topics([NewTopic("vis", 1, 1)]).values():
            f.result()
        with urllib.request.urlopen(b.url("/v1/topics"), timeout=10) as r:
            assert "vis" in [t["name"] for t in json.loads(r.read())["topics"]]
        b.configs["super.users"] = ""
        b.restart()
        # No ACL and allow.everyone.if.no.acl.found=false: every request is refused.
        assert produce_one(b, "t1") == KafkaError.TOPIC_AUTHORIZATION_FAILED
        with kwire.Conn("127.0.0.1", b.port) as c:
            assert c.fetch_v11("t1", 0, 0)["error"] == KafkaError.TOPIC_AUTHORIZATION_FAILED
        with urllib.request.urlopen(b.url("/metrics"), timeout=10) as r:
            text = r.read().decode()
        counts = {}
        for line in text.splitlines():
            if line.startswith("runnel_authorization_denials_total{"):
                labels, value = line.rsplit(" ", 1)
                counts[labels] = float(value)
        assert counts.get('runnel_authorization_denials_total'
                          '{resource_type="TOPIC",operation="READ"}', 0) >= 1, text
        assert any('operation="CREATE"' in k or 'operation="WRITE"' in k
                   or 'operation="DESCRIBE"' in k for k in counts), counts
        # The HTTP API's changes are Kafka requests: the same ACLs refuse them (403).
        req = urllib.request.Request(b.url("/v1/topics"), method="POST",
                                     data=json.dumps({"name": "h1", "partitions": 1}).encode(),
                                     headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=10)
        assert e.value.code == 403
        assert "TOPIC_AUTHORIZATION_FAILED" in e.value.read().decode()
        # Its reads show what ANONYMOUS may DESCRIBE, as Metadata does.
        with urllib.request.urlopen(b.url("/v1/topics"), timeout=10) as r:
            assert json.loads(r.read())["topics"] == []
        for path in ("/v1/topics/vis", "/v1/configs/topics/vis", "/v1/configs/broker"):
            with pytest.raises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(b.url(path), timeout=10)
            assert e.value.code == 403, path
            assert "AUTHORIZATION_FAILED" in e.value.read().decode(), path
        # Kafka's authorizer log line.
        log = b.log_tail(400)
        assert "Principal = User:ANONYMOUS is Denied operation = READ from host = 127.0.0.1" \
               " on resource = Topic:t1" in log, log
    finally:
        b.stop()


def runnel(b, *args):
    import subprocess

    from harness import runnel_bin

    return subprocess.run([runnel_bin(), *args, "-b", b.bootstrap], capture_output=True,
                          text=True, timeout=60)


def test_runnel_acls_cli_add_list_remove(start_broker):
    b = start_broker(authorizer__class__name=AUTHORIZER, super__users=ANONYMOUS)
    r = runnel(b, "acls", "--add", "--allow-principal", "User:alice", "--producer",
               "--topic", "orders", "--transactional-id", "tx")
    assert r.returncode == 0, r.stderr
    assert "Adding ACLs for resource `ResourcePattern(resourceType=TOPIC, name=orders, " \
           "patternType=LITERAL)`" in r.stdout, r.stdout
    r = runnel(b, "acls", "--add", "--deny-principal", "User:bob", "--deny-host", "10.0.0.1",
               "--operation", "Read", "--topic", "pay-", "--resource-pattern-type", "prefixed")
    assert r.returncode == 0, r.stderr
    # The admin client sees what the tool added.
    everything = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None,
                                  AclOperation.ANY, AclPermissionType.ANY)
    a = admin(b)
    assert len(a.describe_acls(everything, request_timeout=10).result()) == 6
    r = runnel(b, "acls", "--list", "--topic", "orders")
    assert r.returncode == 0, r.stderr
    for op in ("WRITE", "DESCRIBE", "CREATE"):
        assert f"(principal=User:alice, host=*, operation={op}, permissionType=ALLOW)" \
            in r.stdout, r.stdout
    r = runnel(b, "acls", "--list", "--topic", "pay-eu", "--resource-pattern-type", "match")
    assert "(principal=User:bob, host=10.0.0.1, operation=READ, permissionType=DENY)" \
        in r.stdout, r.stdout
    r = runnel(b, "acls", "--remove", "--force", "--topic", "orders")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("Removed ACL") == 3, r.stdout
    assert runnel(b, "acls", "--list", "--topic", "orders").stdout.strip() == ""
    # An operation the resource type does not have is a usage error, named.
    r = runnel(b, "acls", "--add", "--allow-principal", "User:a", "--operation",
               "IdempotentWrite", "--topic", "t")
    assert r.returncode == 2 and "IDEMPOTENT_WRITE" in r.stderr, (r.returncode, r.stderr)


def test_runnel_acls_cli_without_an_authorizer_names_security_disabled(broker):
    r = runnel(broker, "acls", "--list")
    assert r.returncode == 1, r.stderr
    assert "SecurityDisabled" in r.stderr and "authorizer.class.name" in r.stderr, r.stderr


def test_share_groups_and_scram_credentials_are_authorized(start_broker):
    """Share-group APIs need READ (heartbeat, fetch, acknowledge) or DESCRIBE on the share
    group, and ShareFetch / ShareAcknowledge READ on each topic; the SCRAM credential APIs
    need DESCRIBE / ALTER on the cluster (Kafka's KafkaApis). Share groups over the raw
    wire, so the answer's error code is checked."""
    from confluent_kafka.admin import ScramCredentialInfo, ScramMechanism, UserScramCredentialUpsertion

    from test_share_groups import find_coordinator, heartbeat, share_acknowledge, share_fetch, topic_id_of

    b = start_broker(authorizer__class__name=AUTHORIZER, super__users=ANONYMOUS)
    a = admin(b)
    for f in a.create_topics([NewTopic("sq", 1, 1), NewTopic("sq-secret", 1, 1)]).values():
        f.result()
    for t in ("sq", "sq-secret"):
        assert produce_one(b, t) is None
    open_id, secret_id = topic_id_of(b, "sq"), topic_id_of(b, "sq-secret")
    create_acls(a, [allow(ANONYMOUS, ResourceType.GROUP, "sg-ok", AclOperation.READ),
                    allow(ANONYMOUS, ResourceType.TOPIC, "sq", AclOperation.ALL)])
    earliest = ConfigResource(ConfigResource.Type.GROUP, "sg-ok", incremental_configs=[
        ConfigEntry("share.auto.offset.reset", "earliest",
                    incremental_operation=AlterConfigOpType.SET)])
    a.incremental_alter_configs([earliest])[earliest].result(timeout=10)
    b.configs["super.users"] = ""
    b.restart()
    a = admin(b)
    member = "AAAAAAAAAAAAAAAAAAAAAA"
    find_coordinator(b, "sg-ok")  # as a client does before it talks to the group
    with kwire.Conn("127.0.0.1", b.port) as c:
        err, _ = heartbeat(c, "sg-no", member, 0, ["sq"])
        assert err == KafkaError.GROUP_AUTHORIZATION_FAILED
        err, _ = heartbeat(c, "sg-ok", member, 0, ["sq"])
        assert err == 0
        err, _ = share_fetch(c, "sg-no", "m1", 0, b"\0" * 16, 0)[:2]
        assert err == KafkaError.GROUP_AUTHORIZATION_FAILED
        assert share_acknowledge(c, "sg-no", "m1", 1, open_id, 0, [])[0] == \
            KafkaError.GROUP_AUTHORIZATION_FAILED
        # A topic without READ: its partition is refused, the request is not.
        err, parts = share_fetch(c, "sg-ok", member, 0, secret_id, 0)
        assert err == 0
        assert [(p[0], p[1]) for p in parts] == [(0, KafkaError.TOPIC_AUTHORIZATION_FAILED)]
        err, parts = share_acknowledge(c, "sg-ok", member, 1, secret_id, 0, [(0, 0, 1)])
        assert (err, parts) == (0, [(0, KafkaError.TOPIC_AUTHORIZATION_FAILED)])
        # The readable topic is served in the same session (the refused one is answered
        # again, as it stays in the session).
        err, parts = share_fetch(c, "sg-ok", member, 2, open_id, 0, max_wait_ms=3000)
        assert err == 0
        assert sorted((p[1], p[3]) for p in parts) == [
            (0, [(0, 0, 1)]), (KafkaError.TOPIC_AUTHORIZATION_FAILED, [])]
    # SCRAM credentials: no ALTER / DESCRIBE on the cluster.
    up = UserScramCredentialUpsertion("alice", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 4096),
                                      b"alice-secret")
    futs = a.alter_user_scram_credentials([up], request_timeout=10)
    assert kafka_error(futs["alice"]) == KafkaError.CLUSTER_AUTHORIZATION_FAILED
    # DescribeUserScramCredentials answers CLUSTER_AUTHORIZATION_FAILED too, but
    # librdkafka 2.16 aborts the process when it frees that error result, so it is not
    # asked from here.


def test_acls_replicate_across_a_three_node_cluster_with_an_authorizer(tmp_path):
    """The brokers connect as User:ANONYMOUS (no SASL yet), so the cluster runs with
    allow.everyone.if.no.acl.found=true and no ACL on the CLUSTER resource: replica
    fetches (CLUSTER_ACTION) pass. An ACL created through one node is in force on every
    node and survives that node's restart; a denied topic still replicates."""
    from cluster import Cluster

    c = Cluster(tmp_path, configs={"authorizer.class.name": AUTHORIZER,
                                   "allow.everyone.if.no.acl.found": "true"}).start()
    try:
        a = admin(c.node(1))
        for t in ("open", "secret"):
            for f in a.create_topics([NewTopic(t, 1, 3)], operation_timeout=20).values():
                f.result(30)
            c.wait_for(f"{t} in sync", lambda t=t: len(c.partition_state(t)[2]) == 3)
        assert produce_one(c.node(1), "secret") is None
        # An ACL on a resource ends "no ACL found" for it: ALLOW ALL, then DENY READ.
        create_acls(a, [allow(ANONYMOUS, ResourceType.TOPIC, "secret", AclOperation.ALL),
                        deny(ANONYMOUS, ResourceType.TOPIC, "secret", AclOperation.READ)])

        def refused_everywhere():
            codes = []
            for n in c.nodes:
                with kwire.Conn("127.0.0.1", n.port) as conn:
                    codes.append(conn.fetch_v11("secret", 0, 0)["error"])
            return codes

        leader = c.partition_state("secret")[0]
        c.wait_for("the DENY in force on the leader",
                   lambda: KafkaError.TOPIC_AUTHORIZATION_FAILED in refused_everywhere())
        # Every node refuses READ (the leader TOPIC_AUTHORIZATION_FAILED; the followers
        # answer the same before telling the client it asked the wrong node).
        assert set(refused_everywhere()) == {KafkaError.TOPIC_AUTHORIZATION_FAILED}
        # The denied topic still replicates (followers fetch with CLUSTER_ACTION).
        assert produce_one(c.node(leader), "secret") is None
        assert produce_one(c.node(1), "open") is None
        c.wait_for("secret in sync", lambda: len(c.partition_state("secret")[2]) == 3)
        # Every node lists the ACL; a restarted node still has it.
        c.node(2).restart()
        everything = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None,
                                      None, AclOperation.ANY, AclPermissionType.ANY)
        for n in c.nodes:
            na = admin(n)
            got = na.describe_acls(everything, request_timeout=10).result()
            assert sorted((x.operation.value, x.permission_type.value) for x in got) == \
                sorted([(AclOperation.ALL.value, AclPermissionType.ALLOW.value),
                        (AclOperation.READ.value, AclPermissionType.DENY.value)])
        with kwire.Conn("127.0.0.1", c.node(2).port) as conn:
            assert conn.fetch_v11("secret", 0, 0)["error"] == \
                KafkaError.TOPIC_AUTHORIZATION_FAILED
    finally:
        problems = c.stop()
        assert not problems, "\n".join(problems)


def test_a_cluster_with_the_broker_principal_as_super_user_replicates(tmp_path):
    """With allow.everyone.if.no.acl.found=false, brokers replicate only because their
    principal (User:ANONYMOUS until SASL) is in super.users: docs/configuration.md."""
    from cluster import Cluster

    c = Cluster(tmp_path, configs={"authorizer.class.name": AUTHORIZER,
                                   "super.users": ANONYMOUS}).start()
    try:
        a = admin(c.node(1))
        for f in a.create_topics([NewTopic("rf3", 1, 3)], operation_timeout=20).values():
            f.result(30)
        c.wait_for("rf3 in sync", lambda: len(c.partition_state("rf3")[2]) == 3)
        leader = c.partition_state("rf3")[0]
        assert produce_one(c.node(leader), "rf3", acks="all") is None
        c.wait_for("rf3 still in sync", lambda: len(c.partition_state("rf3")[2]) == 3)
    finally:
        problems = c.stop()
        assert not problems, "\n".join(problems)



def delete_topic_by_id_v6(conn, topic_id: bytes):
    """DeleteTopics v6 (flexible) for one topic id -> (name, error_code)."""
    body = kwire.uvarint(2) + kwire.compact_string(None) + topic_id + kwire.uvarint(0)
    body += struct.pack(">i", 10000) + kwire.uvarint(0)
    r = conn.request(20, 6, body, header_version=2)
    r.uvarint()  # header tags
    r.int32()  # throttle
    assert r.uvarint() == 2
    n = r.uvarint()
    name = r.take(n - 1).decode() if n else None
    r.take(16)
    return name, r.int16()


def add_partitions_v4(conn, tid, topic):
    """AddPartitionsToTxn v4 (the broker-to-broker form) -> top-level error_code."""
    body = kwire.uvarint(2) + kwire.compact_string(tid) + struct.pack(">qhb", 1, 0, 1)
    body += kwire.uvarint(2) + kwire.compact_string(topic) + kwire.uvarint(2)
    body += struct.pack(">i", 0) + kwire.uvarint(0) + kwire.uvarint(0) + kwire.uvarint(0)
    r = conn.request(24, 4, body, header_version=2)
    r.uvarint()
    r.int32()
    return r.int16()


def test_by_id_and_broker_only_requests(start_broker):
    UNKNOWN_TOPIC_ID, CLUSTER_AUTHORIZATION_FAILED = 100, 31
    from confluent_kafka import TopicCollection

    b = start_broker(authorizer__class__name=AUTHORIZER, super__users=ANONYMOUS)
    a = admin(b)
    for f in a.create_topics([NewTopic("hidden", 1, 1)]).values():
        f.result()
    d = a.describe_topics(TopicCollection(["hidden"]))["hidden"].result()
    tid = struct.pack(">qq", d.topic_id.get_most_significant_bits(),
                      d.topic_id.get_least_significant_bits())
    b.configs["super.users"] = ""
    b.restart()
    with kwire.Conn("127.0.0.1", b.port) as c:
        # A topic named by id that the principal may not DESCRIBE: not even its name.
        assert delete_topic_by_id_v6(c, tid) == (None, UNKNOWN_TOPIC_ID)
        # Only brokers send AddPartitionsToTxn v4+ (CLUSTER_ACTION).
        assert add_partitions_v4(c, "t", "hidden") == CLUSTER_AUTHORIZATION_FAILED


def offset_fetch_v5(conn, group, topics):
    """OffsetFetch v5 for named partitions ({topic: [partition]}) ->
    ({(topic, partition): (offset, error_code)}, top-level error_code)."""
    body = kwire.string(group) + struct.pack(">i", len(topics))
    for t, parts in topics.items():
        body += kwire.string(t) + struct.pack(">i", len(parts))
        body += b"".join(struct.pack(">i", p) for p in parts)
    r = conn.request(9, 5, body)
    r.int32()  # throttle
    out = {}
    for _ in range(r.int32()):
        name = r.string()
        for _ in range(r.int32()):
            p, offset, _epoch = r.int32(), r.int64(), r.int32()
            r.string()  # metadata
            out[(name, p)] = (offset, r.int16())
    return out, r.int16()


def test_offset_fetch_answers_named_undescribable_topics_with_an_error(start_broker):
    """Kafka's handleOffsetFetchRequest: a topic named in the request that the principal
    may not DESCRIBE gets TOPIC_AUTHORIZATION_FAILED per partition asked; the fetch-all
    form leaves it out."""
    from confluent_kafka import ConsumerGroupTopicPartitions

    T, G, group = ResourceType.TOPIC, ResourceType.GROUP, "g-offsets"
    b = start_broker(authorizer__class__name=AUTHORIZER, super__users=ANONYMOUS)
    a = admin(b)
    for t in ("seen", "hidden"):
        for f in a.create_topics([NewTopic(t, 1, 1)]).values():
            f.result()
    create_acls(a, [allow(ANONYMOUS, G, group, AclOperation.READ),
                    allow(ANONYMOUS, T, "seen", AclOperation.DESCRIBE)])
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": group})
    c.commit(offsets=[TopicPartition("seen", 0, 3), TopicPartition("hidden", 0, 5)],
             asynchronous=False)
    c.close()
    b.configs["super.users"] = ""
    b.restart()
    a = admin(b)

    # librdkafka (OffsetFetch v8+, one group) with partitions named.
    named = [TopicPartition("seen", 0), TopicPartition("hidden", 0)]
    got = a.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group, named)],
                                        request_timeout=10)[group].result(10)
    by_topic = {tp.topic: tp for tp in got.topic_partitions}
    assert by_topic["seen"].offset == 3 and by_topic["seen"].error is None
    assert by_topic["hidden"].error is not None
    assert by_topic["hidden"].error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    # The fetch-all form: the hidden topic is silently left out.
    got = a.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)],
                                        request_timeout=10)[group].result(10)
    assert [(tp.topic, tp.offset) for tp in got.topic_partitions] == [("seen", 3)]

    # The same through OffsetFetch v5 (per-partition error codes, as older clients see).
    with kwire.Conn("127.0.0.1", b.port) as conn:
        parts, top = offset_fetch_v5(conn, group, {"hidden": [0, 1], "seen": [0]})
    assert top == 0
    assert parts == {("seen", 0): (3, 0),
                     ("hidden", 0): (-1, KafkaError.TOPIC_AUTHORIZATION_FAILED),
                     ("hidden", 1): (-1, KafkaError.TOPIC_AUTHORIZATION_FAILED)}
