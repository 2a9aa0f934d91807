#!/usr/bin/env python3
"""Cluster-link mirroring throughput and lag (docs/mirroring.md), against the same run's
single-cluster replication throughput. Started by this script on 127.0.0.1: a source
(one node), a target (one node), and for the baseline a 3-node cluster.

1. Produce: `runnel bench produce` writes N MiB to the source (acks=1): its MB/s.
2. Mirror: a link is created on the target once the data is there; the time until the
   target has every offset is the mirroring throughput (N MiB / seconds).
3. Replicate (baseline): on the 3-node cluster, a follower of an RF=3 topic is killed,
   N MiB are produced (acks=1), the follower restarts; the time from its restart until
   it is back in the ISR is the replication throughput (this includes the restart and
   its registration, so it understates the follower fetcher somewhat).
4. Lag under steady load: `runnel bench e2e --rate R` on the source for D seconds while
   the target's `links describe` is sampled every 0.5 s: lag in records and MiB.

The broker binary: $RUNNEL_BIN if set, else $CARGO_TARGET_DIR/release/runnel if it
exists, else the debug build; the script says which.

    ~/.cache/runnel-venv/bin/python scripts/mirror-bench.py [--mib 200] [--rate-mib 10] [--seconds 20]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "clients", "python"))

from cluster import Cluster  # noqa: E402
from harness import Broker, pick_binary  # noqa: E402

RECORD = 1024


def runnel(*args, timeout=600):
    r = subprocess.run([os.environ["RUNNEL_BIN"], *args], capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise SystemExit(f"runnel {' '.join(args)} failed: {r.stderr}")
    return r.stdout


def bench_produce(bootstrap, topic, mib, partitions, acks="1"):
    out = runnel("bench", "produce", "-b", bootstrap, "--topic", topic, "--partitions", str(partitions),
                 "--record-size", str(RECORD), "--count", str(mib * 1024), "--acks", acks,
                 "--keep-topic", "--json")
    return json.loads(out.strip().splitlines()[-1])


def describe(target, link):
    return json.loads(runnel("links", "describe", link, "--json", "-b", target))


def mirrored(target, link, topic):
    d = describe(target, link)
    t = next((t for t in d["topics"] if t["topic"] == topic), None)
    if not t:
        return None, None
    return (sum(p["mirrored_offset"] or 0 for p in t["partitions"]),
            sum(p["lag"] or 0 for p in t["partitions"]))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=200)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--rate-mib", type=float, default=10)
    ap.add_argument("--seconds", type=int, default=20)
    a = ap.parse_args()
    path, which = pick_binary()
    os.environ["RUNNEL_BIN"] = path
    print(f"binary: {path} ({which})")
    records = a.mib * 1024
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        source = Broker(tmp / "source", {"http.listeners": ""}, name="source").start()
        target = Broker(tmp / "target", {"http.listeners": ""}, name="target").start()
        try:
            r = bench_produce(source.bootstrap, "bulk", a.mib, a.partitions)
            print(f"produce to the source (runnel bench produce, acks=1): {a.mib} MiB, "
                  f"{r['mb_per_s']:.1f} MB/s")
            runnel("links", "create", "bench", "--source", source.bootstrap, "--topics", "bulk|steady",
                   "--set", "metadata.max.age.ms=200", "-b", target.bootstrap)
            start = time.monotonic()
            while True:
                got, _ = mirrored(target.bootstrap, "bench", "bulk")
                if got == records:
                    break
                if time.monotonic() - start > 600:
                    raise SystemExit(f"not mirrored in 600 s: {got} of {records}")
                time.sleep(0.1)
            secs = time.monotonic() - start
            print(f"mirror {a.mib} MiB: {secs:.2f} s, {a.mib / secs:.1f} MiB/s "
                  f"(from link creation; includes topic creation and the first metadata poll)")

            rate = int(a.rate_mib * 1024 * 1024 / RECORD)
            proc = subprocess.Popen([path, "bench", "e2e", "-b", source.bootstrap, "--topic", "steady",
                                     "--partitions", str(a.partitions), "--record-size", str(RECORD),
                                     "--rate", str(rate), "--duration-secs", str(a.seconds), "--json"],
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            lags = []
            while proc.poll() is None:
                _, lag = mirrored(target.bootstrap, "bench", "steady")
                if lag is not None:
                    lags.append(lag)
                time.sleep(0.5)
            e2e = proc.stdout.read().strip().splitlines()
            if lags:
                lags.sort()
                p50, p99, top = lags[len(lags) // 2], lags[int(len(lags) * 0.99) - 1 if len(lags) > 1 else 0], lags[-1]
                mib = RECORD / 1024 / 1024
                print(f"lag under {a.rate_mib} MiB/s ({rate} records/s) for {a.seconds} s, {len(lags)} samples: "
                      f"median {p50} records ({p50 * mib:.2f} MiB), p99 {p99} ({p99 * mib:.2f} MiB), max {top} "
                      f"({top * mib:.2f} MiB)")
            if e2e:
                print(f"source e2e (produce to consume on the source itself): {e2e[-1]}")
        finally:
            for b in (source, target):
                b.stop()

        c = Cluster(tmp / "cluster").start()
        try:
            boot = c.bootstrap
            runnel("topics", "create", "--topic", "repl", "--partitions", str(a.partitions),
                   "--replication-factor", "3", "-b", boot)
            follower = c.nodes[2]
            time.sleep(2)
            follower.kill9()
            # Fenced: no partition led by it any more (a fixed sleep was too short once the
            # controller's session timers grew).
            c.wait_for("leadership off the killed follower",
                       lambda: all(c.partition_state("repl", p)[0] not in (follower.node_id, -1)
                                   for p in range(a.partitions)), timeout=120, interval=0.5)
            bench_produce(c.alive_bootstrap(), "repl", a.mib, a.partitions)
            start = time.monotonic()
            follower.start()
            c.wait_for("the follower back in every ISR",
                       lambda: all(follower.node_id in c.partition_state("repl", p)[2]
                                   for p in range(a.partitions)), timeout=600, interval=0.1)
            secs = time.monotonic() - start
            print(f"replicate {a.mib} MiB to a restarted follower: {secs:.2f} s, {a.mib / secs:.1f} MiB/s "
                  f"(includes its restart)")
        finally:
            c.stop()


if __name__ == "__main__":
    main()
