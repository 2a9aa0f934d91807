#!/usr/bin/env python3
"""Failover pause on a local 3-node cluster with Kafka's default broker.session.timeout.ms
(9000): kill -9 a broker that leads the partition, then time until an acks=all produce to
that partition is acknowledged by the new leader. Two cases, several rounds each:
  - the killed broker is a partition leader but not the active controller;
  - the killed broker is the active controller (and a partition leader): the quorum elects
    a new controller first.
Against the same run's baseline: the time of an acks=all produce with every broker up.

The broker binary: $RUNNEL_BIN, else $CARGO_TARGET_DIR/release/runnel, else the debug
build; the script says which.

    ~/.cache/runnel-venv/bin/python scripts/failover.py [--rounds 3] [--case controller]
        [--keep-logs DIR]

With --keep-logs each round's node logs are copied to DIR/<case>-<round>/ with a
`times` file holding the wall-clock (UTC) time of the kill and of the acknowledgement, to
read against the nodes' log timestamps (RUST_LOG=info,openraft=info adds Raft's own
election lines).
"""

import argparse
import datetime
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "clients", "python"))

from confluent_kafka import Producer  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

from cluster import Cluster  # noqa: E402
from harness import pick_binary, unique  # noqa: E402


def producer(bootstrap):
    return Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                     "linger.ms": 0, "retry.backoff.ms": 20, "retry.backoff.max.ms": 50,
                     "topic.metadata.refresh.interval.ms": 1000,
                     "reconnect.backoff.ms": 20, "reconnect.backoff.max.ms": 100})


def produce_one(p, topic, partition, timeout_s):
    """Sends one acks=all record and waits for its acknowledgement (librdkafka retries
    meanwhile)."""
    done = []
    p.produce(topic, value=b"x", partition=partition, on_delivery=lambda err, msg: done.append(err))
    p.flush(timeout_s)
    if not done or done[0] is not None:
        raise RuntimeError(f"produce failed: {done}")


def leader_of(bootstrap, topic, partition):
    md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=10)
    return md.topics[topic].partitions[partition].leader, md.controller_id


def wall():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%H:%M:%S.%f")


def keep_logs(tmp, dest, lines):
    os.makedirs(dest, exist_ok=True)
    for log in Path(tmp).glob("node*/node*.log"):
        shutil.copy(log, Path(dest) / log.name)
    (Path(dest) / "times").write_text("\n".join(lines) + "\n")


def one_round(controller_case, logs_dir=None):
    with tempfile.TemporaryDirectory() as tmp:
        c = Cluster(Path(tmp), configs={"broker.session.timeout.ms": "9000",
                                        "broker.heartbeat.interval.ms": "2000",
                                        "replica.lag.time.max.ms": "30000"}).start()
        try:
            topic = unique("failover")
            admin = AdminClient({"bootstrap.servers": c.bootstrap})
            admin.create_topics([NewTopic(topic, 3, 3)])[topic].result(30)
            c.wait_for("fully in sync", lambda: all(len(c.partition_state(topic, p)[2]) == 3 for p in range(3)))
            # One producer, connected and warm before the kill; the baseline is its
            # acks=all round trip with every broker up.
            prod = producer(c.bootstrap)
            for partition in range(3):
                produce_one(prod, topic, partition, 10)
            t0 = time.perf_counter()
            produce_one(prod, topic, 0, 10)
            baseline = time.perf_counter() - t0
            controller = leader_of(c.bootstrap, topic, 0)[1]
            victim, partition = None, None
            for p in range(3):
                leader = c.partition_state(topic, p)[0]
                if (leader == controller) == controller_case:
                    victim, partition = leader, p
                    break
            if victim is None:
                return None
            t0 = time.perf_counter()
            killed_at = wall()
            c.node(victim).kill9()
            produce_one(prod, topic, partition, 30)
            pause = time.perf_counter() - t0
            if logs_dir:
                keep_logs(tmp, logs_dir, [f"killed node {victim} (controller {controller}) at {killed_at}",
                                          f"acknowledged {topic}-{partition} at {wall()}",
                                          f"pause {pause * 1000:.0f} ms"])
            return baseline, pause
        finally:
            c.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--case", choices=("leader", "controller", "both"), default="both")
    ap.add_argument("--keep-logs", metavar="DIR", help="copy each round's node logs here")
    args = ap.parse_args()
    binary, which = pick_binary()
    os.environ["RUNNEL_BIN"] = binary
    print(f"broker: {which} build ({binary}); broker.session.timeout.ms=9000 (Kafka's default)")
    for label, controller_case in (("partition leader, not the controller", False),
                                   ("the active controller", True)):
        if args.case != "both" and controller_case != (args.case == "controller"):
            continue
        pauses, baselines = [], []
        for _ in range(args.rounds * 3):
            if len(pauses) == args.rounds:
                break
            dest = None
            if args.keep_logs:
                dest = os.path.join(args.keep_logs, f"{'controller' if controller_case else 'leader'}-{len(pauses)}")
            r = one_round(controller_case, dest)
            if r is not None:
                baselines.append(r[0])
                pauses.append(r[1])
        if not pauses:
            print(f"{label}: no round had that layout")
            continue
        print(f"{label}: kill -9 -> first acks=all ack: median {statistics.median(pauses) * 1000:.0f} ms, "
              f"max {max(pauses) * 1000:.0f} ms over {len(pauses)} rounds "
              f"(baseline acks=all produce, all up: median {statistics.median(baselines) * 1000:.1f} ms)")


if __name__ == "__main__":
    main()
