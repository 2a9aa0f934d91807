"""One metadata path: a node without controller.quorum.voters is its own single voter.

A fresh node keeps topics and configs in its metadata log only (no topics.json). A data
dir written before the one-voter quorum (topics.json, acls.json, scram-credentials.json
beside the partitions) is imported once at the first start: every topic keeps its id,
partitions, configs and records, groups their committed offsets, transactions their
outcome, and ACLs and SCRAM users stay; the files are renamed `*.imported`.

The old layout is made from a node of this version: its metadata log is removed and the
files the previous version wrote are put in its place, with the same contents (topic ids,
partition counts and configs; the ACL and SCRAM records as the old files held them).
"""

import json
import os
import shutil
import struct
import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicCollection, TopicPartition
from confluent_kafka.admin import (AclBinding, AclBindingFilter, AclOperation,
                                   AclPermissionType, AdminClient, ConfigResource, NewTopic,
                                   ResourcePatternType, ResourceType, ScramCredentialInfo,
                                   ScramMechanism, UserScramCredentialUpsertion)

from harness import unique

QUIET = {"log_level": 0}


def admin(b):
    return AdminClient({"bootstrap.servers": b.bootstrap, **QUIET})


def meta_dir(b):
    return os.path.join(b.data_dir, "__cluster_metadata")


def metadata_records(b):
    """The broker-config records of the node's metadata log, last value per key."""
    path = os.path.join(meta_dir(b), "quorum", "log.bin")
    raw = open(path, "rb").read()
    out, i = {}, 0
    while i + 8 <= len(raw):
        n, _crc = struct.unpack(">II", raw[i:i + 8])
        entry = json.loads(raw[i + 8:i + 8 + n])
        i += 8 + n
        payload = entry.get("Entry", {}).get("payload", {})
        for rec in payload.get("Normal", []) if isinstance(payload, dict) else []:
            if "BrokerConfig" in rec:
                out[rec["BrokerConfig"]["key"]] = rec["BrokerConfig"]["value"]
    return {k: v for k, v in out.items() if v is not None}


def topic_uuid(kafka_uuid):
    """A Kafka topic id as the UUID text topics.json holds."""
    m = kafka_uuid.get_most_significant_bits() & (2**64 - 1)
    l = kafka_uuid.get_least_significant_bits() & (2**64 - 1)
    return str(uuid.UUID(int=(m << 64) | l))


def read_committed(b, topic, partitions, want):
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": unique("r"),
                  "isolation.level": "read_committed", "enable.auto.commit": False, **QUIET})
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    got = []
    deadline = time.monotonic() + 20
    while len(got) < want and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and not m.error():
            got.append(m.value())
    c.close()
    return sorted(got)


def test_fresh_node_keeps_topics_in_its_one_voter_quorum(start_broker):
    b = start_broker()
    topic = unique("fresh")
    a = admin(b)
    for f in a.create_topics([NewTopic(topic, 2, 1)]).values():
        f.result(timeout=20)
    assert not os.path.exists(os.path.join(meta_dir(b), "topics.json"))
    assert os.path.exists(os.path.join(meta_dir(b), "quorum", "log.bin"))
    b.stop()
    b.start()
    md = admin(b).list_topics(topic, timeout=10)
    assert len(md.topics[topic].partitions) == 2
    assert not os.path.exists(os.path.join(meta_dir(b), "topics.json"))


@pytest.mark.timeout_s(120)
def test_old_single_node_data_dir_is_imported_with_nothing_lost(start_broker):
    # ACLs need an authorizer; the anonymous test client is a super user.
    b = start_broker({"authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
                      "super.users": "User:ANONYMOUS"})
    a = admin(b)
    topic = unique("keep")
    for f in a.create_topics([NewTopic(topic, 2, 1, config={"retention.ms": "86400123"})]).values():
        f.result(timeout=20)
    p = Producer({"bootstrap.servers": b.bootstrap, **QUIET})
    for i in range(10):
        p.produce(topic, value=f"v{i}".encode(), partition=i % 2)
    assert p.flush(20) == 0
    tp = Producer({"bootstrap.servers": b.bootstrap, "transactional.id": unique("tx"), **QUIET})
    tp.init_transactions(20)
    tp.begin_transaction()
    tp.produce(topic, value=b"committed", partition=0)
    tp.commit_transaction(20)
    tp.begin_transaction()
    tp.produce(topic, value=b"aborted", partition=1)
    tp.flush(20)
    tp.abort_transaction(20)
    group = unique("g")
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": group, **QUIET})
    c.commit(offsets=[TopicPartition(topic, 0, 4), TopicPartition(topic, 1, 3)],
             asynchronous=False)
    c.close()
    acl = AclBinding(ResourceType.TOPIC, topic, ResourcePatternType.LITERAL, "User:bob", "*",
                     AclOperation.READ, AclPermissionType.ALLOW)
    for f in a.create_acls([acl]).values():
        f.result(timeout=20)
    for f in a.alter_user_scram_credentials([UserScramCredentialUpsertion(
            "alice", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 4096), b"pw")]).values():
        f.result(timeout=20)
    before = {}
    md = a.list_topics(timeout=10)
    described = a.describe_topics(TopicCollection(list(md.topics)))
    for name, f in described.items():
        before[name] = (topic_uuid(f.result(timeout=10).topic_id), len(md.topics[name].partitions))
    records = metadata_records(b)
    b.stop()

    # The previous version's layout: no quorum, its files instead.
    shutil.rmtree(os.path.join(meta_dir(b), "quorum"))
    configs = {topic: {"retention.ms": "86400123"}}
    with open(os.path.join(meta_dir(b), "topics.json"), "w") as f:
        json.dump({"topics": [{"name": n, "id": i, "partitions": parts, "configs": configs.get(n, {})}
                              for n, (i, parts) in before.items()]}, f)
    with open(os.path.join(meta_dir(b), "acls.json"), "w") as f:
        json.dump({k[len("acl:"):]: v for k, v in records.items() if k.startswith("acl:")}, f)
    scram = {}
    for k, v in records.items():
        if k.startswith("scram:"):
            _, mech, user = k.split(":", 2)
            scram.setdefault(user, {})[mech] = v
    assert scram, records
    with open(os.path.join(meta_dir(b), "scram-credentials.json"), "w") as f:
        json.dump(scram, f)

    b.start()
    for name in ("topics.json", "acls.json", "scram-credentials.json"):
        assert not os.path.exists(os.path.join(meta_dir(b), name)), name
        assert os.path.exists(os.path.join(meta_dir(b), name + ".imported")), name
    a = admin(b)
    md = a.list_topics(timeout=10)
    described = a.describe_topics(TopicCollection(list(before)))
    after = {n: (topic_uuid(f.result(timeout=10).topic_id), len(md.topics[n].partitions))
             for n, f in described.items()}
    assert after == before
    r = ConfigResource("topic", topic)
    assert a.describe_configs([r])[r].result(timeout=10)["retention.ms"].value == "86400123"
    assert read_committed(b, topic, 2, 11) == sorted([f"v{i}".encode() for i in range(10)] + [b"committed"])
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": group, **QUIET})
    committed = c.committed([TopicPartition(topic, 0), TopicPartition(topic, 1)], timeout=10)
    c.close()
    assert [(x.partition, x.offset) for x in committed] == [(0, 4), (1, 3)]
    acls = a.describe_acls(AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None,
                                            None, AclOperation.ANY, AclPermissionType.ANY)).result(timeout=10)
    assert [(x.name, x.principal) for x in acls] == [(topic, "User:bob")]
    users = a.describe_user_scram_credentials(["alice"])
    desc = users["alice"].result(timeout=10) if isinstance(users, dict) else users.result(timeout=10)["alice"]
    assert [(i.mechanism, i.iterations) for i in desc.scram_credential_infos] == [
        (ScramMechanism.SCRAM_SHA_256, 4096)]

    # Imported once: a restart reads the metadata log only, and no file comes back.
    b.stop()
    b.start()
    assert not os.path.exists(os.path.join(meta_dir(b), "topics.json"))
    assert read_committed(b, topic, 2, 11) == sorted([f"v{i}".encode() for i in range(10)] + [b"committed"])
