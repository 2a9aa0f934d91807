"""Kafka's listener model: a KRaft server.properties as Kafka ships it starts Runnel, each
client is told the endpoints of the listener it came in on, and listeners Runnel cannot
serve yet are refused at start with the key named.

The 3-node form (a REPLICATION listener for broker traffic, CONTROLLER for the quorum,
under kill -9 and SIGSTOP) is test_cluster.py::test_history_with_kafkas_kraft_listeners.
"""

import struct
import subprocess

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

import kwire
from cluster import free_ports
from harness import Broker, runnel_bin, unique

DESCRIBE_QUORUM = 55


def describe_quorum(address):
    """DescribeQuorum v0 for __cluster_metadata-0: (error, [(partition error, leader,
    epoch, high watermark, [(voter, log end)], [(observer, log end)])])."""
    body = (kwire.uvarint(2) + kwire.compact_string("__cluster_metadata")
            + kwire.uvarint(2) + struct.pack(">i", 0) + kwire.uvarint(0)
            + kwire.uvarint(0) + kwire.uvarint(0))
    with kwire.Conn(*address) as c:
        r = c.request(DESCRIBE_QUORUM, 0, body, header_version=2)
    r.uvarint()  # response header tagged fields
    error = r.int16()

    def replicas():
        out = []
        for _ in range(r.uvarint() - 1):
            out.append((r.int32(), r.int64()))
            r.uvarint()
        return out
    partitions = []
    for _ in range(r.uvarint() - 1):
        r.take(r.uvarint() - 1)  # topic name
        for _ in range(r.uvarint() - 1):
            r.int32()
            partitions.append((r.int16(), r.int32(), r.int32(), r.int64(), replicas(), replicas()))
            r.uvarint()
        r.uvarint()
    return error, partitions

# Kafka 4's config/server.properties (KRaft, combined node), with 127.0.0.1 for the bind
# addresses and test-chosen ports: the quorum from controller.quorum.bootstrap.servers
# with this node as its only voter (what `kafka-storage format --standalone` makes).
KAFKA_SERVER_PROPERTIES = """\
############################# Server Basics #############################
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=localhost:{controller}

############################# Socket Server Settings #############################
listeners=PLAINTEXT://127.0.0.1:{kafka},CONTROLLER://127.0.0.1:{controller}
inter.broker.listener.name=PLAINTEXT
advertised.listeners=PLAINTEXT://localhost:{kafka},CONTROLLER://localhost:{controller}
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL
num.network.threads=3
num.io.threads=8
socket.send.buffer.bytes=102400
socket.receive.buffer.bytes=102400
socket.request.max.bytes=104857600

############################# Log Basics #############################
log.dirs={data}
num.partitions=1
num.recovery.threads.per.data.dir=1

############################# Internal Topic Settings  #############################
offsets.topic.replication.factor=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1

############################# Log Retention Policy #############################
log.retention.hours=168
log.segment.bytes=1073741824
log.retention.check.interval.ms=300000
"""


class PropertiesBroker(Broker):
    """A broker started from a server.properties file alone."""

    def __init__(self, workdir, properties, **ports):
        super().__init__(workdir)
        self.properties = workdir / "server.properties"
        self.properties.write_text(properties.format(data=self.data_dir, **ports))

    def argv(self):
        return [runnel_bin(), "server", "--config", str(self.properties)]


def test_kafkas_kraft_server_properties_start_runnel(tmp_path):
    kafka, controller = free_ports(2)
    b = PropertiesBroker(tmp_path, KAFKA_SERVER_PROPERTIES, kafka=kafka, controller=controller)
    b.start()
    try:
        assert b.port == kafka
        topic = unique("kraft")
        # Idempotent: the first sends race the topic's auto-creation and may be retried;
        # idempotence keeps them in order, as the read-back below expects.
        p = Producer({"bootstrap.servers": b.bootstrap, "acks": "all", "enable.idempotence": True})
        delivered = []
        for i in range(10):
            p.produce(topic, value=f"v{i}".encode(), on_delivery=lambda e, m: delivered.append(e))
        assert p.flush(30) == 0
        assert delivered == [None] * 10
        md = AdminClient({"bootstrap.servers": b.bootstrap}).list_topics(timeout=10)
        # The advertised PLAINTEXT endpoint, not the bind address or the controller's.
        assert [(br.host, br.port) for br in md.brokers.values()] == [("localhost", kafka)]
        c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": unique("g"),
                      "auto.offset.reset": "earliest"})
        c.subscribe([topic])
        got = []
        for _ in range(60):
            m = c.poll(0.5)
            if m is not None and not m.error():
                got.append(m.value().decode())
            if len(got) == 10:
                break
        c.commit(asynchronous=False)
        c.close()
        assert got == [f"v{i}" for i in range(10)]
        # KIP-595's DescribeQuorum: this node leads its one-voter quorum.
        error, partitions = describe_quorum(b.address)
        assert error == 0, error
        [(perror, leader, epoch, hw, voters, observers)] = partitions
        assert (perror, leader, observers) == (0, 1, []), partitions
        assert epoch >= 1 and hw > 0 and [v for v, _ in voters] == [1], partitions
    finally:
        problems = b.stop()
    assert not problems, problems
    # A restart on the same properties finds its quorum state and its data.
    b.start()
    try:
        md = AdminClient({"bootstrap.servers": b.bootstrap}).list_topics(topic, timeout=10)
        assert topic in md.topics and md.topics[topic].error is None
    finally:
        problems = b.stop()
    assert not problems, problems


def test_each_listener_advertises_its_own_endpoints(tmp_path):
    internal, external = free_ports(2)
    b = Broker(tmp_path, {
        "listeners": f"INTERNAL://127.0.0.1:{internal},EXTERNAL://127.0.0.1:{external}",
        "advertised.listeners": f"INTERNAL://127.0.0.1:{internal},EXTERNAL://localhost:{external}",
        "listener.security.protocol.map": "INTERNAL:PLAINTEXT,EXTERNAL:PLAINTEXT",
        "inter.broker.listener.name": "INTERNAL",
    })
    # The harness's own `listeners` comes first; ours (set later) wins.
    b.start()
    try:
        assert b.port == internal
        seen = {}
        for name, port in (("internal", internal), ("external", external)):
            md = AdminClient({"bootstrap.servers": f"127.0.0.1:{port}"}).list_topics(timeout=10)
            seen[name] = [(br.host, br.port) for br in md.brokers.values()]
        assert seen == {"internal": [("127.0.0.1", internal)], "external": [("localhost", external)]}
        # FindCoordinator answers with the same listener's endpoint: a group works
        # through the external listener.
        topic = unique("ext")
        p = Producer({"bootstrap.servers": f"127.0.0.1:{external}"})
        p.produce(topic, value=b"x")
        assert p.flush(30) == 0
        c = Consumer({"bootstrap.servers": f"127.0.0.1:{external}", "group.id": unique("g"),
                      "auto.offset.reset": "earliest"})
        c.subscribe([topic])
        msg = None
        for _ in range(60):
            msg = c.poll(0.5)
            if msg is not None and not msg.error():
                break
        assert msg is not None and msg.value() == b"x"
        c.commit(asynchronous=False)
        c.close()
        # No voters configured: the node is its own single voter, and DescribeQuorum
        # (KIP-595) says so, as on any node.
        error, partitions = describe_quorum(b.address)
        assert error == 0, error
        [(perror, leader, epoch, hw, voters, observers)] = partitions
        assert (perror, observers) == (0, []), partitions
        assert epoch >= 1 and hw > 0 and [v for v, _ in voters] == [leader], partitions
    finally:
        problems = b.stop()
    assert not problems, problems


def refused(tmp_path, *sets):
    argv = [runnel_bin(), "server", "--set", f"log.dirs={tmp_path}"]
    for s in sets:
        argv += ["--set", s]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    return r.returncode, r.stderr


def test_listeners_runnel_cannot_serve_are_refused_by_key(tmp_path):
    port, = free_ports(1)
    # An SSL listener needs a PEM keystore (Kafka's default store type is JKS).
    code, err = refused(tmp_path, f"listeners=SSL://127.0.0.1:{port}",
                        "ssl.keystore.location=/k.jks")
    assert code == 2 and "ssl.keystore.type" in err and "PEM" in err, err
    # A SASL listener needs mechanisms Runnel has (Kafka's default is GSSAPI).
    code, err = refused(tmp_path, f"listeners=SASL_PLAINTEXT://127.0.0.1:{port}")
    assert code == 2 and "sasl.enabled.mechanisms" in err and "GSSAPI" in err, err
    code, err = refused(tmp_path, f"listeners=A://127.0.0.1:{port}",
                        "listener.security.protocol.map=B:PLAINTEXT")
    assert code == 2 and "listener.security.protocol.map" in err and "A" in err, err
    code, err = refused(tmp_path, f"listeners=PLAINTEXT://127.0.0.1:{port}",
                        "inter.broker.listener.name=REPLICATION")
    assert code == 2 and "inter.broker.listener.name" in err, err
    # A multi-voter quorum needs the voters' ids.
    code, err = refused(tmp_path, "process.roles=broker,controller",
                        "controller.quorum.bootstrap.servers=127.0.0.1:19093,127.0.0.1:19094")
    assert code == 2 and "controller.quorum.voters" in err, err
