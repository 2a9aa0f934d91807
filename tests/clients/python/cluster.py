"""A replicated Runnel cluster for tests: N nodes on 127.0.0.1, each its own process and
data dir, every node a broker and a metadata-quorum voter (KRaft's combined mode), with
ports the test picked. Nodes can be killed, paused (SIGSTOP: a hung node, not a dead
one), resumed and restarted on the same data dir.
"""

import socket
import time

from confluent_kafka.admin import AdminClient

from harness import Broker, BrokerError


def free_ports(n):
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def consecutive_free_ports(n, attempts=200):
    """A base port such that base..base+n-1 are all free (for `runnel cluster local`,
    which numbers its ports from a base)."""
    import random
    for _ in range(attempts):
        base = random.randint(20000, 60000 - n)
        socks = []
        try:
            for port in range(base, base + n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no {n} consecutive free ports found")


class ClusterNode(Broker):
    def __init__(self, workdir, node_id, port, controller_port, voters, configs,
                 replication_port=None, replication_protocol="PLAINTEXT",
                 controller_protocol="PLAINTEXT"):
        super().__init__(workdir, configs, name=f"node{node_id}")
        self.node_id = node_id
        self.fixed_port = port
        self.controller_port = controller_port
        self.voters = voters
        # Kafka's KRaft listener layout: clients on PLAINTEXT, brokers on REPLICATION,
        # the quorum on CONTROLLER (each its own port).
        self.replication_port = replication_port
        self.replication_protocol = replication_protocol
        self.controller_protocol = controller_protocol

    def argv(self):
        args = super().argv()
        # The last --set wins: a fixed Kafka port, so a restarted node is where it was.
        if self.replication_port is None:
            args += ["--set", f"listeners=PLAINTEXT://127.0.0.1:{self.fixed_port}"]
        else:
            listeners = [f"PLAINTEXT://127.0.0.1:{self.fixed_port}",
                         f"REPLICATION://127.0.0.1:{self.replication_port}"]
            if self.controller_port is not None:
                listeners.append(f"CONTROLLER://127.0.0.1:{self.controller_port}")
            args += ["--set", "listeners=" + ",".join(listeners),
                     "--set", "listener.security.protocol.map="
                              f"PLAINTEXT:PLAINTEXT,REPLICATION:{self.replication_protocol},"
                              f"CONTROLLER:{self.controller_protocol}",
                     "--set", "inter.broker.listener.name=REPLICATION",
                     "--set", "controller.listener.names=CONTROLLER"]
        args += ["--set", f"node.id={self.node_id}",
                 "--set", f"controller.quorum.voters={self.voters}",
                 "--set", "http.listeners="]
        return args

    paused = False

    def pause(self):
        self.proc.send_signal(19)  # SIGSTOP
        self.paused = True

    def resume(self):
        self.proc.send_signal(18)  # SIGCONT
        self.paused = False

    def answers(self):
        """Running and not stopped: it can answer a request."""
        return self.alive() and not self.paused


DEFAULTS = {
    "default.replication.factor": "3",
    "min.insync.replicas": "2",
    "offsets.topic.replication.factor": "3",
    "transaction.state.log.replication.factor": "3",
    # Fence a dead broker after 3 s (Kafka's default is 9 s) to keep tests short.
    "broker.session.timeout.ms": "3000",
    "broker.heartbeat.interval.ms": "500",
    "replica.lag.time.max.ms": "5000",
    "group.initial.rebalance.delay.ms": "0",
}


class Cluster:
    def __init__(self, tmp_path, n=3, configs=None, node_configs=None, partitionable=False,
                 kraft_listeners=False, replication_protocol="PLAINTEXT",
                 controller_protocol="PLAINTEXT"):
        """`partitionable`: every node reaches every other node's quorum port through its
        own proxy (netfault.Proxy), so `isolate(id)` cuts a node off the metadata quorum
        and the controller while clients and replication still reach it.
        `kraft_listeners`: each node has Kafka's KRaft listener layout (PLAINTEXT for
        clients, REPLICATION for brokers, CONTROLLER for the quorum); with
        `replication_protocol` (e.g. SASL_SSL) the REPLICATION listener is secured, with
        `controller_protocol` (e.g. SSL) the CONTROLLER one (the quorum's port)."""
        ports = free_ports(3 * n)
        kafka_ports, controller_ports = ports[:n], ports[n:2 * n]
        replication_ports = ports[2 * n:] if kraft_listeners else [None] * n
        self.proxies = {}
        if partitionable:
            from netfault import Proxy
            for i in range(n):
                for j in range(n):
                    if i != j:
                        self.proxies[(i + 1, j + 1)] = Proxy(controller_ports[j])

        def voters_of(i):
            return ",".join(
                f"{j + 1}@127.0.0.1:"
                + str(self.proxies[(i + 1, j + 1)].port if (i + 1, j + 1) in self.proxies
                      else controller_ports[j])
                for j in range(n))
        merged = {**DEFAULTS, **(configs or {})}
        self.nodes = [
            ClusterNode(tmp_path / f"node{i + 1}", i + 1, kafka_ports[i], controller_ports[i],
                        voters_of(i), {**merged, **(node_configs or {}).get(i + 1, {})},
                        replication_port=replication_ports[i],
                        replication_protocol=replication_protocol,
                        controller_protocol=controller_protocol)
            for i in range(n)
        ]

    def isolate(self, node_id):
        """Cuts every quorum/controller connection to and from `node_id`."""
        for (a, b), proxy in self.proxies.items():
            if node_id in (a, b):
                proxy.cut()

    def heal(self):
        for proxy in self.proxies.values():
            proxy.heal()

    def add_broker(self, tmp_path, configs=None):
        """Starts one more node as a broker only (process.roles=broker): the quorum's
        voters are fixed, brokers can come and go."""
        node_id = len(self.nodes) + 1
        port, = free_ports(1)
        first = self.nodes[0]
        node = ClusterNode(tmp_path / f"node{node_id}", node_id, port, None, first.voters,
                           {**first.configs, "process.roles": "broker", **(configs or {})},
                           replication_port=first.replication_port and free_ports(1)[0],
                           replication_protocol=first.replication_protocol,
                           controller_protocol=first.controller_protocol)
        self.nodes.append(node)
        node.start()
        return node

    def start(self):
        for node in self.nodes:
            node.launch()
        for node in self.nodes:
            node.await_ready()
        return self

    def node(self, node_id):
        return self.nodes[node_id - 1]

    @property
    def bootstrap(self):
        return ",".join(f"127.0.0.1:{n.fixed_port}" for n in self.nodes)

    def alive_bootstrap(self):
        return ",".join(f"127.0.0.1:{n.fixed_port}" for n in self.nodes if n.answers())

    def partition_state(self, topic, partition=0, timeout=20):
        """(leader, replicas, isr) once every live node's metadata agrees on it. A node
        that was paused, cut off or just restarted can answer from an older image for a
        moment (as a Kafka broker does), so one node's word is not enough."""
        deadline = time.monotonic() + timeout
        last = None
        while True:
            views = set()
            try:
                for n in self.nodes:
                    if not n.answers():
                        continue
                    admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{n.fixed_port}"})
                    p = admin.list_topics(topic, timeout=5).topics[topic].partitions[partition]
                    views.add((p.leader, tuple(p.replicas), tuple(sorted(p.isrs))))
            except Exception as e:  # noqa: BLE001 - a node may be going down meanwhile
                last = e
                views = set()
            if len(views) == 1:
                leader, replicas, isr = views.pop()
                return leader, list(replicas), list(isr)
            if views:
                last = views
            if time.monotonic() > deadline:
                raise BrokerError(f"the nodes disagree about {topic}-{partition}: {last!r}")
            time.sleep(0.2)

    def wait_for(self, what, check, timeout=30, interval=0.2):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                last = check()
                if last:
                    return last
            except Exception as e:  # noqa: BLE001 - a node may be down mid-check
                last = e
            time.sleep(interval)
        raise BrokerError(f"timed out after {timeout}s waiting for {what}; last: {last!r}\n"
                          + "\n".join(n.log_tail(15) for n in self.nodes))

    def stop(self):
        problems = []
        for proxy in self.proxies.values():
            proxy.close()
        for n in self.nodes:
            if n.proc is not None and n.proc.poll() is None:
                n.resume()
        for n in self.nodes:
            problems += [f"node {n.node_id}: {p}" for p in n.stop()]
        return problems
