#!/usr/bin/env python3
"""Transactional produce (N records per transaction) against plain idempotent produce,
in one run, on a broker this script starts itself: same record size, same count,
confluent-kafka (librdkafka), one partition each, acks=all.

The broker binary: $RUNNEL_BIN if set, else $CARGO_TARGET_DIR/release/runnel if it
exists, else $CARGO_TARGET_DIR/debug/runnel (CARGO_TARGET_DIR defaults to
~/.cache/runnel-target); the script says which one it used.

    ~/.cache/runnel-venv/bin/python scripts/txn-bench.py [--records 50000] [--size 1024] [--per-txn 100]
"""

import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "clients", "python"))

from confluent_kafka import Producer  # noqa: E402

import ck  # noqa: E402
from harness import Broker, pick_binary, unique  # noqa: E402


def run_plain(b, topic, n, payload):
    p = Producer({"bootstrap.servers": b.bootstrap, "enable.idempotence": True, "acks": "all",
                  "linger.ms": 5, **ck.QUIET})
    errors = []
    cb = lambda err, msg: err and errors.append(err)
    t0 = time.perf_counter()
    for i in range(n):
        while True:
            try:
                p.produce(topic, value=payload, partition=0, on_delivery=cb)
                break
            except BufferError:
                p.poll(0.005)
        p.poll(0)
    assert p.flush(120) == 0
    dt = time.perf_counter() - t0
    assert not errors, errors[:3]
    return dt


def run_txn(b, topic, n, payload, per_txn):
    p = Producer({"bootstrap.servers": b.bootstrap, "transactional.id": unique("bench"),
                  "acks": "all", "linger.ms": 5, **ck.QUIET})
    p.init_transactions(30)
    errors = []
    cb = lambda err, msg: err and errors.append(err)
    t0 = time.perf_counter()
    sent = 0
    while sent < n:
        p.begin_transaction()
        for _ in range(min(per_txn, n - sent)):
            while True:
                try:
                    p.produce(topic, value=payload, partition=0, on_delivery=cb)
                    break
                except BufferError:
                    p.poll(0.005)
            sent += 1
        p.commit_transaction(60)  # flushes, then EndTxn and the markers
    dt = time.perf_counter() - t0
    assert not errors, errors[:3]
    return dt


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=50000)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--per-txn", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds of each; the best is kept")
    a = ap.parse_args()
    binary, kind = pick_binary()
    os.environ["RUNNEL_BIN"] = binary
    print(f"broker: {binary} ({kind} build)")
    work = tempfile.mkdtemp(prefix="runnel-txn-bench-")
    b = Broker(work, name="bench")
    try:
        b.start()
        payload = os.urandom(a.size)
        results = {"idempotent": [], "transactional": []}
        for r in range(a.rounds):
            for kind_ in ("idempotent", "transactional"):
                topic = ck.create_topic(b, unique(f"bench-{kind_[:3]}"))
                if kind_ == "idempotent":
                    dt = run_plain(b, topic, a.records, payload)
                else:
                    dt = run_txn(b, topic, a.records, payload, a.per_txn)
                hw = ck.watermarks(b, topic)[1]
                expect = a.records + (a.records + a.per_txn - 1) // a.per_txn * (kind_ == "transactional")
                assert hw == expect, f"{kind_}: high watermark {hw}, expected {expect}"
                results[kind_].append(dt)
                print(f"  round {r + 1} {kind_:13s} {a.records / dt:10.0f} records/s "
                      f"{a.records * a.size / dt / 1e6:7.2f} MB/s ({dt:.2f}s)")
        best = {k: min(v) for k, v in results.items()}
        print(f"\n{a.records} records of {a.size} B, one partition, acks=all; transactional: "
              f"{a.per_txn} records per transaction; best of {a.rounds}")
        for k in ("idempotent", "transactional"):
            print(f"{k:13s} {a.records / best[k]:10.0f} records/s {a.records * a.size / best[k] / 1e6:7.2f} MB/s")
        print(f"ratio transactional / idempotent: {best['idempotent'] / best['transactional']:.2f}")
    finally:
        problems = b.stop()
        if problems:
            print("\n".join(problems), file=sys.stderr)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
