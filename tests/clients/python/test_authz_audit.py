"""Authorization gaps found by comparing each API's checks with Kafka's KafkaApis, as an
attacker would probe them: User:alice (SASL PLAIN) against User:admin's (super user)
transaction, topics and group. APIs librdkafka does not expose go over the raw wire
(`kwire`), so the exact error code is checked.
"""

import struct
import time
import uuid

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AclOperation, NewTopic, ResourcePatternType, ResourceType

import kwire
from test_acls import (ADMIN, ALICE, AUTHORIZER, admin, allow, broker_conf, client_conf,
                       create_acls, raw_conn)

CONSUMER_GROUP_HEARTBEAT, CONSUMER_GROUP_DESCRIBE = 68, 69
CREATE_TOPICS, DESCRIBE_TRANSACTIONS, OFFSET_DELETE = 19, 65, 47
INVALID_PRODUCER_ID_MAPPING = 49
ATTR_TRANSACTIONAL = 0x10


def secured_broker(start_broker):
    """A SASL broker with an authorizer: admin is the super user, alice has no ACL yet."""
    return start_broker({**broker_conf(ALICE), "authorizer.class.name": AUTHORIZER,
                         "super.users": ADMIN})


def make_topics(b, *names):
    a = admin(b, ADMIN)
    for f in a.create_topics([NewTopic(n, 1, 1) for n in names]).values():
        f.result()
    return a


def open_transaction(b, tid, topics):
    """admin's transactional producer with one record on partition 0 of each of `topics`,
    its transaction left open."""
    p = Producer({"bootstrap.servers": b.bootstrap, "transactional.id": tid,
                  **client_conf(ADMIN)})
    p.init_transactions(10)
    p.begin_transaction()
    for t in topics:
        p.produce(t, b"v", partition=0)
    assert p.flush(10) == 0
    return p


def describe_transaction(conn, tid):
    """DescribeTransactions v0 for one id -> (error_code, producer_id, epoch,
    {topic: [partition]})."""
    body = kwire.uvarint(2) + kwire.compact_string(tid) + kwire.uvarint(0)
    r = conn.request(DESCRIBE_TRANSACTIONS, 0, body, header_version=2)
    r.uvarint()  # response header tags
    r.int32()  # throttle
    assert r.uvarint() - 1 == 1
    err = r.int16()
    assert r.compact_string() == tid
    r.compact_string()  # state
    r.int32(), r.int64()  # timeout, start time
    pid, epoch = r.int64(), r.int16()
    topics = {}
    for _ in range(r.uvarint() - 1):
        name = r.compact_string()
        topics[name] = [r.int32() for _ in range(r.uvarint() - 1)]
        r.uvarint()
    return err, pid, epoch, topics


def test_transactional_records_need_the_transactional_id_they_belong_to(start_broker):
    """Kafka's handleProduceRequest: transactional records need a transactional id the
    principal may WRITE (TRANSACTIONAL_ID_AUTHORIZATION_FAILED for the whole request, an
    absent id included); a producer id is only written under its own transactional id.
    Before: alice, with WRITE on the topic only, wrote into admin's open transaction by
    leaving the id out or naming her own."""
    b = secured_broker(start_broker)
    a = make_topics(b, "t")
    create_acls(a, [allow(ALICE, ResourceType.TOPIC, "t", AclOperation.WRITE),
                    allow(ALICE, ResourceType.TRANSACTIONAL_ID, "alice-tx",
                          AclOperation.WRITE)])
    victim = open_transaction(b, "victim", ["t"])
    with raw_conn(b, ADMIN) as c:
        err, pid, epoch, topics = describe_transaction(c, "victim")
    assert err == 0 and topics == {"t": [0]}
    forged = kwire.record_batch([(None, b"forged")], producer_id=pid, producer_epoch=epoch,
                                base_sequence=1, attributes=ATTR_TRANSACTIONAL)
    with raw_conn(b, ALICE) as c:
        assert c.produce("t", 0, forged)[0] == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
        assert c.produce("t", 0, forged, transactional_id="victim")[0] == \
            KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
        assert c.produce("t", 0, forged, transactional_id="alice-tx")[0] == \
            INVALID_PRODUCER_ID_MAPPING
    # The owner's transaction is untouched and commits.
    victim.commit_transaction(10)
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "check", **client_conf(ADMIN),
                  "isolation.level": "read_committed", "enable.partition.eof": True})
    c.assign([TopicPartition("t", 0, 0)])
    values = []
    while True:
        m = c.poll(10)
        assert m is not None, "no end of partition"
        if m.error():
            assert m.error().code() == KafkaError._PARTITION_EOF
            break
        values.append(m.value())
    c.close()
    assert values == [b"v"]


def test_describe_transactions_leaves_out_topics_the_principal_may_not_describe(start_broker):
    """Kafka's handleDescribeTransactionsRequest keeps only the partitions of topics the
    principal may DESCRIBE. Before: a transaction's topics were all named."""
    b = secured_broker(start_broker)
    a = make_topics(b, "seen", "hidden")
    create_acls(a, [allow(ALICE, ResourceType.TRANSACTIONAL_ID, "tx", AclOperation.DESCRIBE),
                    allow(ALICE, ResourceType.TOPIC, "seen", AclOperation.DESCRIBE)])
    p = open_transaction(b, "tx", ["seen", "hidden"])
    with raw_conn(b, ADMIN) as c:
        assert describe_transaction(c, "tx")[3] == {"seen": [0], "hidden": [0]}
    with raw_conn(b, ALICE) as c:
        err, _, _, topics = describe_transaction(c, "tx")
    assert err == 0 and topics == {"seen": [0]}
    p.abort_transaction(10)


def coordinators_ready(b, *groups):
    """FindCoordinator (as the admin) for each group; the raw-wire requests below then go
    to its coordinator."""
    with raw_conn(b, ADMIN) as c:
        for g in groups:
            kwire.await_coordinator(c, g)


def consumer_heartbeat(conn, group, topics):
    """A joining ConsumerGroupHeartbeat v0 subscribing to `topics` -> error code."""
    body = (kwire.compact_string(group) + kwire.compact_string(str(uuid.uuid4()))
            + struct.pack(">i", 0) + kwire.uvarint(0) + kwire.uvarint(0)
            + struct.pack(">i", 30000) + kwire.uvarint(len(topics) + 1)
            + b"".join(kwire.compact_string(t) for t in topics)
            + kwire.uvarint(0) + kwire.uvarint(1) + kwire.uvarint(0))
    r = conn.request(CONSUMER_GROUP_HEARTBEAT, 0, body, header_version=2)
    r.uvarint()  # response header tags
    r.int32()  # throttle
    return r.int16()


def test_consumer_group_heartbeat_needs_describe_on_subscribed_topics(start_broker):
    """Kafka's handleConsumerGroupHeartbeat: subscribing by name to a topic the member
    may not DESCRIBE answers TOPIC_AUTHORIZATION_FAILED. Before: the member joined and
    its assignment told which of the topics exist."""
    b = secured_broker(start_broker)
    a = make_topics(b, "seen", "hidden")
    create_acls(a, [allow(ALICE, ResourceType.GROUP, "g", AclOperation.READ),
                    allow(ALICE, ResourceType.TOPIC, "seen", AclOperation.READ)])
    coordinators_ready(b, "g")
    with raw_conn(b, ALICE) as c:
        assert consumer_heartbeat(c, "g", ["hidden"]) == KafkaError.TOPIC_AUTHORIZATION_FAILED
        assert consumer_heartbeat(c, "g", ["seen", "hidden"]) == \
            KafkaError.TOPIC_AUTHORIZATION_FAILED
        assert consumer_heartbeat(c, "g", ["seen"]) == 0


def offset_delete(conn, group, topics):
    """OffsetDelete v0 for partition 0 of each topic -> (error_code, {topic: code})."""
    body = kwire.string(group) + struct.pack(">i", len(topics))
    body += b"".join(kwire.string(t) + struct.pack(">ii", 1, 0) for t in topics)
    r = conn.request(OFFSET_DELETE, 0, body)
    err = r.int16()
    r.int32()  # throttle
    codes = {}
    for _ in range(r.int32()):
        name = r.string()
        for _ in range(r.int32()):
            r.int32()
            codes[name] = r.int16()
    return err, codes


def test_offset_delete_refuses_unreadable_topics_per_partition(start_broker):
    """Kafka's handleOffsetDeleteRequest: DELETE on the group, then READ on each topic;
    an unreadable topic's partitions answer TOPIC_AUTHORIZATION_FAILED and the others are
    deleted. Before: one unreadable topic refused the whole request at the top level."""
    b = secured_broker(start_broker)
    a = make_topics(b, "seen", "hidden")
    create_acls(a, [allow(ALICE, ResourceType.GROUP, "g", AclOperation.DELETE),
                    allow(ALICE, ResourceType.TOPIC, "seen", AclOperation.READ)])
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "g", **client_conf(ADMIN)})
    c.commit(offsets=[TopicPartition("seen", 0, 3), TopicPartition("hidden", 0, 5)],
             asynchronous=False)
    c.close()
    with raw_conn(b, ALICE) as conn:
        assert offset_delete(conn, "g", ["seen", "hidden"]) == \
            (0, {"seen": 0, "hidden": KafkaError.TOPIC_AUTHORIZATION_FAILED})
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "g", **client_conf(ADMIN)})
    left = c.committed([TopicPartition("seen", 0), TopicPartition("hidden", 0)], timeout=10)
    c.close()
    assert [(tp.topic, tp.offset) for tp in left] == [("seen", -1001), ("hidden", 5)]


def consumer_group_describe(conn, group):
    """ConsumerGroupDescribe v0 for one group -> (error_code, member count)."""
    body = kwire.uvarint(2) + kwire.compact_string(group) + b"\0" + kwire.uvarint(0)
    r = conn.request(CONSUMER_GROUP_DESCRIBE, 0, body, header_version=2)
    r.uvarint()  # response header tags
    r.int32()  # throttle
    assert r.uvarint() - 1 == 1
    err = r.int16()
    r.compact_string()  # error message
    assert r.compact_string() == group
    r.compact_string()  # state
    r.int32(), r.int32()  # group epoch, assignment epoch
    r.compact_string()  # assignor
    return err, r.uvarint() - 1


def test_consumer_group_describe_hides_groups_assigned_undescribable_topics(start_broker):
    """Kafka's handleConsumerGroupDescribe: a group whose members are assigned a topic the
    principal may not DESCRIBE is answered TOPIC_AUTHORIZATION_FAILED without members.
    Before: the members' assignments named the topic."""
    b = secured_broker(start_broker)
    a = make_topics(b, "seen", "hidden")
    create_acls(a, [allow(ALICE, ResourceType.GROUP, "g-", AclOperation.DESCRIBE,
                          ResourcePatternType.PREFIXED),
                    allow(ALICE, ResourceType.TOPIC, "seen", AclOperation.DESCRIBE)])
    coordinators_ready(b, "g-hidden", "g-seen")
    with raw_conn(b, ADMIN) as c:
        assert consumer_heartbeat(c, "g-hidden", ["hidden"]) == 0
        assert consumer_heartbeat(c, "g-seen", ["seen"]) == 0
        assert consumer_group_describe(c, "g-hidden") == (0, 1)
    with raw_conn(b, ALICE) as c:
        assert consumer_group_describe(c, "g-hidden") == (KafkaError.TOPIC_AUTHORIZATION_FAILED, 0)
        assert consumer_group_describe(c, "g-seen") == (0, 1)


def create_topic_v5(conn, name):
    """CreateTopics v5 of one 1-partition topic -> (error_code, config count or None,
    topic_config_error_code)."""
    body = (kwire.uvarint(2) + kwire.compact_string(name) + struct.pack(">ih", 1, 1)
            + kwire.uvarint(1) + kwire.uvarint(1) + kwire.uvarint(0)
            + struct.pack(">ib", 10000, 0) + kwire.uvarint(0))
    r = conn.request(CREATE_TOPICS, 5, body, header_version=2)
    r.uvarint()  # response header tags
    r.int32()  # throttle
    assert r.uvarint() - 1 == 1
    assert r.compact_string() == name
    err = r.int16()
    r.compact_string()  # error message
    r.int32(), r.int16()  # partitions, replication factor
    nconfigs = r.uvarint() - 1
    for _ in range(max(nconfigs, 0)):
        r.compact_string(), r.compact_string()
        r.take(3)  # read only, source, sensitive
        for _ in range(r.uvarint()):
            r.uvarint(), r.take(r.uvarint())
    config_error = 0
    for _ in range(r.uvarint()):
        tag, size = r.uvarint(), r.uvarint()
        value = r.take(size)
        if tag == 0:
            config_error = struct.unpack(">h", value)[0]
    return err, (None if nconfigs < 0 else nconfigs), config_error


def test_create_topics_returns_configs_only_with_describe_configs(start_broker):
    """Kafka's CreateTopics: the created topic's configs come back only to a principal
    that may DESCRIBE_CONFIGS it (else topic_config_error_code TOPIC_AUTHORIZATION_FAILED).
    Before: every creator got the topic's configs (the broker's defaults)."""
    b = secured_broker(start_broker)
    a = admin(b, ADMIN)
    create_acls(a, [allow(ALICE, ResourceType.TOPIC, "c-", AclOperation.CREATE,
                          ResourcePatternType.PREFIXED),
                    allow(ALICE, ResourceType.TOPIC, "c-open", AclOperation.DESCRIBE_CONFIGS)])
    with raw_conn(b, ALICE) as c:
        assert create_topic_v5(c, "c-closed") == (0, None, KafkaError.TOPIC_AUTHORIZATION_FAILED)
        err, nconfigs, config_error = create_topic_v5(c, "c-open")
    assert err == 0 and nconfigs > 0 and config_error == 0


def consumer_heartbeat_regex(conn, group, regex):
    """A joining ConsumerGroupHeartbeat v1 subscribing to `regex` -> (error code,
    {topic id: [partition]} of the assignment, None when absent)."""
    body = (kwire.compact_string(group) + kwire.compact_string(str(uuid.uuid4()))
            + struct.pack(">i", 0) + kwire.uvarint(0) + kwire.uvarint(0)
            + struct.pack(">i", 30000) + kwire.uvarint(0) + kwire.compact_string(regex)
            + kwire.uvarint(0) + kwire.uvarint(1) + kwire.uvarint(0))
    r = conn.request(CONSUMER_GROUP_HEARTBEAT, 1, body, header_version=2)
    r.uvarint()  # response header tags
    r.int32()  # throttle
    err = r.int16()
    r.compact_string(), r.compact_string()  # error message, member id
    r.int32(), r.int32()  # member epoch, heartbeat interval
    if r.int8() < 0:
        return err, None
    assignment = {}
    for _ in range(r.uvarint() - 1):
        topic_id = r.take(16)
        assignment[topic_id] = [r.int32() for _ in range(r.uvarint() - 1)]
        r.uvarint()
    return err, assignment


def test_consumer_group_regex_resolves_only_to_describable_topics(start_broker):
    """Kafka (KIP-848) resolves a member's subscription regex only to topics its principal
    may DESCRIBE. Before: a regex such as '.*' was assigned every topic, telling which
    exist."""
    from confluent_kafka import TopicCollection

    b = secured_broker(start_broker)
    a = make_topics(b, "r-seen", "r-hidden")
    create_acls(a, [allow(ALICE, ResourceType.GROUP, "g-re", AclOperation.READ),
                    allow(ALICE, ResourceType.TOPIC, "r-seen", AclOperation.DESCRIBE)])
    ids = {}
    for name, f in a.describe_topics(TopicCollection(["r-seen", "r-hidden"])).items():
        tid = f.result().topic_id
        ids[struct.pack(">qq", tid.get_most_significant_bits(),
                        tid.get_least_significant_bits())] = name
    coordinators_ready(b, "g-re", "g-re-admin")
    with raw_conn(b, ALICE) as c:
        err, assignment = consumer_heartbeat_regex(c, "g-re", "r-.*")
    assert err == 0 and assignment is not None
    assert {ids[t]: ps for t, ps in assignment.items()} == {"r-seen": [0]}
    with raw_conn(b, ADMIN) as c:
        err, assignment = consumer_heartbeat_regex(c, "g-re-admin", "r-.*")
    assert {ids[t] for t in assignment} == {"r-seen", "r-hidden"}
