#!/usr/bin/env python3
"""How long a 10-member consumer group takes to settle after an 11th member joins.

Starts a broker with default settings ($RUNNEL_BIN, else the debug build under
$CARGO_TARGET_DIR or ~/.cache/runnel-target), creates a 22-partition topic, and for each
protocol (classic with the range assignor, and group.protocol=consumer, KIP-848) brings up
10 confluent-kafka consumers with the client's defaults, waits until they are settled, adds
an 11th and measures the time from its subscribe() until the group is settled again:
every member owns its partitions (a disjoint cover of the topic, none empty) and the
group, as DescribeGroups/ConsumerGroupDescribe sees it, is Stable with 11 members whose
assignments are those the members hold. Each measurement is repeated 3 times.

Run: ~/.cache/runnel-venv/bin/python scripts/group-settle.py [--repeat 3] [--members 10]
"""

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "clients", "python"))

from confluent_kafka import Consumer, ConsumerGroupState  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

PARTITIONS = 22


class Member:
    def __init__(self, bootstrap, topic, group, protocol):
        conf = {"bootstrap.servers": bootstrap, "group.id": group, "log_level": 3,
                "enable.auto.commit": False, "auto.offset.reset": "latest"}
        if protocol == "consumer":
            conf["group.protocol"] = "consumer"
        else:
            conf["partition.assignment.strategy"] = "range"
        self.c = Consumer(conf)
        self.owned = set()
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.topic = topic
        self.subscribed_at = None
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def on_assign(self, c, parts):
        with self.lock:
            self.owned |= {p.partition for p in parts}

    def on_revoke(self, c, parts):
        with self.lock:
            self.owned -= {p.partition for p in parts}

    def run(self):
        self.subscribed_at = time.monotonic()
        self.c.subscribe([self.topic], on_assign=self.on_assign, on_revoke=self.on_revoke,
                         on_lost=self.on_revoke)
        while not self.stop.is_set():
            self.c.poll(0.02)
        self.c.close()

    def parts(self):
        with self.lock:
            return frozenset(self.owned)

    def close(self):
        self.stop.set()


def locally_settled(members):
    sets = [m.parts() for m in members]
    union = frozenset().union(*sets)
    return all(sets) and sum(len(s) for s in sets) == len(union) == PARTITIONS, sets


def group_settled(admin, group, sets):
    d = admin.describe_consumer_groups([group], request_timeout=5)[group].result(5)
    if d.state != ConsumerGroupState.STABLE or len(d.members) != len(sets):
        return False
    described = sorted(sorted(tp.partition for tp in m.assignment.topic_partitions) for m in d.members)
    return described == sorted(sorted(s) for s in sets)


def wait_settled(admin, group, members, timeout, since):
    deadline = since + timeout
    while time.monotonic() < deadline:
        ok, sets = locally_settled(members)
        if ok and group_settled(admin, group, sets):
            return time.monotonic() - since
        time.sleep(0.01)
    raise RuntimeError(f"group {group} not settled within {timeout}s: "
                       f"{[sorted(m.parts()) for m in members]}")


def measure(bootstrap, admin, topic, protocol, n):
    group = f"settle-{protocol}-{uuid.uuid4().hex[:8]}"
    members = [Member(bootstrap, topic, group, protocol) for _ in range(n)]
    try:
        t_first = time.monotonic()
        first = wait_settled(admin, group, members, 120, t_first)
        time.sleep(1.0)  # let the group sit stable
        late = Member(bootstrap, topic, group, protocol)
        members.append(late)
        while late.subscribed_at is None:
            time.sleep(0.001)
        return first, wait_settled(admin, group, members, 120, late.subscribed_at)
    finally:
        for m in members:
            m.close()
        for m in members:
            m.thread.join(30)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--members", type=int, default=10)
    args = ap.parse_args()
    if not os.environ.get("RUNNEL_BIN"):
        target = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/runnel-target"))
        os.environ["RUNNEL_BIN"] = os.path.join(target, "debug", "runnel")
    from harness import Broker

    b = Broker(tempfile.mkdtemp(prefix="runnel-settle-"), name="settle-broker")
    b.start()
    try:
        admin = AdminClient({"bootstrap.servers": b.bootstrap, "log_level": 3})
        topic = "settle-" + uuid.uuid4().hex[:8]
        admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)])[topic].result(15)
        print(f"broker {os.environ['RUNNEL_BIN']} (default settings), topic with {PARTITIONS} partitions, "
              f"{args.members} members + 1 joining, {args.repeat} runs each")
        for protocol, label in (("classic", "classic (range)"), ("consumer", "group.protocol=consumer")):
            firsts, joins = [], []
            for i in range(args.repeat):
                first, join = measure(b.bootstrap, admin, topic, protocol, args.members)
                firsts.append(first)
                joins.append(join)
                print(f"  {label:26s} run {i + 1}: initial {args.members} settled in {first:6.2f}s; "
                      f"after the 11th joined, settled in {join:6.2f}s", flush=True)
            print(f"{label:28s} 11th member join -> settled: "
                  f"{', '.join(f'{j:.2f}' for j in joins)} s (median {statistics.median(joins):.2f} s)")
    finally:
        problems = b.stop()
        if problems:
            print("broker problems:", problems, file=sys.stderr)


if __name__ == "__main__":
    main()
