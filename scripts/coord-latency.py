#!/usr/bin/env python3
"""Coordinator write latency on a local 3-node cluster, against an acks=all produce in
the same run: a synchronous offset commit (confluent-kafka `commit(asynchronous=False)`)
and a one-record transaction (`begin_transaction`, produce, `commit_transaction`), each
timed one at a time. The cluster is started by this script (tests/clients/python/cluster.py:
three `runnel server` processes on 127.0.0.1, RF=3, min ISR 2).

The broker binary: $RUNNEL_BIN if set, else $CARGO_TARGET_DIR/release/runnel if it
exists, else $CARGO_TARGET_DIR/debug/runnel; the script says which one it used.

    ~/.cache/runnel-venv/bin/python scripts/coord-latency.py [--samples 30] [--kraft-listeners]
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "clients", "python"))

from confluent_kafka import Consumer, Producer, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

from cluster import Cluster  # noqa: E402
from harness import pick_binary, unique  # noqa: E402


def timed(samples, op):
    out = []
    for i in range(samples):
        start = time.perf_counter()
        op(i)
        out.append((time.perf_counter() - start) * 1000)
    return out


def summary(name, ms):
    ms = sorted(ms)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    print(f"{name:<28} n={len(ms):<4} p50={statistics.median(ms):8.2f} ms  "
          f"p99={p99:8.2f} ms  max={ms[-1]:8.2f} ms", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=30)
    ap.add_argument("--kraft-listeners", action="store_true",
                    help="run the nodes with Kafka's KRaft listener layout (REPLICATION, CONTROLLER)")
    args = ap.parse_args()
    binary, which = pick_binary()
    os.environ["RUNNEL_BIN"] = binary
    print(f"runnel binary: {binary} ({which})", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        c = Cluster(Path(tmp), kraft_listeners=args.kraft_listeners).start()
        try:
            bootstrap = c.bootstrap
            topic = unique("lat")
            admin = AdminClient({"bootstrap.servers": bootstrap})
            admin.create_topics([NewTopic(topic, 1, 3)])[topic].result(30)
            c.wait_for("topic in sync", lambda: len(c.partition_state(topic, 0)[2]) == 3)

            p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 0})
            p.produce(topic, value=b"warm-up")
            p.flush(30)

            def produce(i):
                p.produce(topic, value=b"x" * 100)
                assert p.flush(30) == 0
            summary("produce acks=all", timed(args.samples, produce))

            group = unique("g")
            consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                                 "enable.auto.commit": False})
            consumer.commit(offsets=[TopicPartition(topic, 0, 0)], asynchronous=False)

            def commit(i):
                consumer.commit(offsets=[TopicPartition(topic, 0, i + 1)], asynchronous=False)
            summary("offset commit (sync)", timed(args.samples, commit))
            consumer.close()

            tp = Producer({"bootstrap.servers": bootstrap, "transactional.id": unique("tx"),
                           "linger.ms": 0})
            tp.init_transactions(30)

            def txn(i):
                tp.begin_transaction()
                tp.produce(topic, value=b"t")
                tp.commit_transaction(30)
            txn(0)
            summary("one-record transaction", timed(args.samples, txn))
        finally:
            problems = c.stop()
            if problems:
                print("\n".join(problems), file=sys.stderr)


if __name__ == "__main__":
    main()
