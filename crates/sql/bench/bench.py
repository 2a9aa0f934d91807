#!/usr/bin/env python3
"""Trending-hashtags benchmark: Runnel from files, Runnel from a topic, and Apache Spark
from the same files, in one run. See README.md beside this file.

Prints, per system: events (tweets) per second over the whole streaming run, and the
per-batch latency (p50/p99 of each micro-batch's triggerExecution: from planning the
batch's offsets to its output committed), for batches of the same size (N / FILES
tweets). Stdlib only; Spark runs from the venv given by --python.
"""
import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def percentile(xs, q):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = min(len(xs) - 1, max(0, round(q * (len(xs) - 1))))
    return xs[k]


def progress_objects(text):
    """The pretty-printed progress JSON objects in `runnel sql --progress` stderr."""
    dec = json.JSONDecoder()
    out, i = [], 0
    while True:
        i = text.find("\n{", i)
        if i < 0:
            return out
        try:
            obj, end = dec.raw_decode(text, i + 1)
        except json.JSONDecodeError:
            i += 2
            continue
        if isinstance(obj, dict) and "batchId" in obj:
            out.append(obj)
        i = end


def run_runnel(runnel, query, defines, label):
    cmd = [runnel, "sql", "-f", query, "--progress", "--trigger", "availableNow"]
    for k, v in defines.items():
        cmd += ["-d", f"{k}={v}"]
    started = time.time()
    p = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.time() - started
    if p.returncode != 0:
        sys.exit(f"{label}: runnel sql failed:\n{p.stderr[-4000:]}")
    progress = [o for o in progress_objects("\n" + p.stderr) if o["numInputRows"] > 0]
    return {
        "rows": sum(o["numInputRows"] for o in progress),
        "batches": len(progress),
        "wall_s": wall,
        "batch_ms": [o["durationMs"]["triggerExecution"] for o in progress],
    }


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_live(args, port, data):
    """The live run: the trending query in update mode on a topic being written at
    `--rate` tweets/s; latency_probe.py measures produce-to-output latency."""
    boot = f"127.0.0.1:{port}"
    for topic, parts in (("tweets-live", "4"), ("trending-live", "1")):
        subprocess.run(
            [args.runnel, "topics", "create", topic, "-p", parts, "--bootstrap-server", boot],
            check=True, stdout=subprocess.DEVNULL,
        )
    query = subprocess.Popen(
        [args.runnel, "sql", "-f", os.path.join(HERE, "trending_live.sql"),
         "-d", f"bootstrap={boot}", "-d", "topic=tweets-live", "-d", "outputTopic=trending-live"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(3)
        print(f"live run: {args.rate} tweets/s for {args.seconds} s, probes every 250 ms ...", flush=True)
        p = subprocess.run(
            [args.python, os.path.join(HERE, "latency_probe.py"), "--bootstrap", boot,
             "--topic", "tweets-live", "--output", "trending-live", "--data", data,
             "--rate", str(args.rate), "--seconds", str(args.seconds)],
            capture_output=True, text=True,
        )
        if p.returncode != 0:
            sys.exit(f"latency probe failed:\n{p.stderr[-4000:]}")
        return json.loads(p.stdout.strip().splitlines()[-1])
    finally:
        query.send_signal(signal.SIGTERM)
        try:
            query.wait(timeout=20)
        except subprocess.TimeoutExpired:
            query.kill()


def report(label, r, n):
    eps = r["rows"] / r["wall_s"]
    ms = r["batch_ms"]
    print(
        f"{label:<22} {r['rows']:>9} tweets {r['batches']:>4} batches  "
        f"{eps:>11,.0f} tweets/s  batch latency p50 {percentile(ms, 0.5):>6.0f} ms "
        f"p99 {percentile(ms, 0.99):>6.0f} ms  (wall {r['wall_s']:.1f} s)"
    )
    if r["rows"] != n:
        print(f"  warning: {label} read {r['rows']} tweets, expected {n}")
    return eps


def main():
    a = argparse.ArgumentParser()
    a.add_argument("--runnel", required=True, help="release build of the runnel binary")
    a.add_argument("--python", required=True, help="python of a venv with pyspark 4.x")
    a.add_argument("--work", default=os.path.expanduser("~/.cache/runnel-bench/work"))
    a.add_argument("--tweets", type=int, default=1_000_000)
    a.add_argument("--files", type=int, default=20)
    a.add_argument("--cores", type=int, default=2)
    a.add_argument("--skip-spark", action="store_true")
    a.add_argument("--skip-latency", action="store_true")
    a.add_argument("--rate", type=int, default=10000, help="tweets/s in the live run")
    a.add_argument("--seconds", type=float, default=20, help="length of the live run")
    args = a.parse_args()
    n, files = args.tweets, args.files
    work = args.work
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(os.path.join(work, "files"))
    data = os.path.join(work, "tweets.jsonl")
    print(f"generating {n} tweets (seed 7) ...", flush=True)
    subprocess.run(
        [args.runnel, "demo", "tweets", "--to-file", data, "--count", str(n), "--seed", "7", "--rate", "0"],
        check=True,
    )
    # The same tweets, split into `files` files of equal line counts (one per batch).
    per = -(-n // files)
    with open(data) as f:
        for i in range(files):
            with open(os.path.join(work, "files", f"part-{i:04}.jsonl"), "w") as out:
                for _ in range(per):
                    line = f.readline()
                    if not line:
                        break
                    out.write(line)
    size_mb = os.path.getsize(data) / 1e6
    print(f"{n} tweets, {size_mb:.0f} MB, {files} files of {per} tweets; {args.cores} cores", flush=True)

    results = {}
    live = None
    results["runnel (files)"] = run_runnel(
        args.runnel, os.path.join(HERE, "trending_files.sql"), {"dir": os.path.join(work, "files")}, "files"
    )

    # A broker on a free port, the tweets produced into a topic, then the query.
    port = free_port()
    broker = subprocess.Popen(
        [
            args.runnel, "server",
            "--set", f"listeners=PLAINTEXT://127.0.0.1:{port}",
            "--set", f"log.dirs={os.path.join(work, 'broker')}",
            "--set", "num.partitions=4",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        print("producing the tweets into a topic ...", flush=True)
        t0 = time.time()
        subprocess.run(
            [args.runnel, "demo", "tweets", "-b", f"127.0.0.1:{port}", "-t", "tweets",
             "--from-file", data, "--rate", "0", "--count", str(n)],
            check=True, stdout=subprocess.DEVNULL,
        )
        print(f"  produced in {time.time() - t0:.1f} s", flush=True)
        results["runnel (topic)"] = run_runnel(
            args.runnel,
            os.path.join(HERE, "trending_topic.sql"),
            {"bootstrap": f"127.0.0.1:{port}", "topic": "tweets", "maxOffsetsPerTrigger": per},
            "topic",
        )
        if not args.skip_latency:
            live = run_live(args, port, data)
    finally:
        broker.send_signal(signal.SIGTERM)
        try:
            broker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            broker.kill()

    if not args.skip_spark:
        print("running Spark ...", flush=True)
        p = subprocess.run(
            [args.python, os.path.join(HERE, "spark_trending.py"), os.path.join(work, "files"), str(args.cores)],
            capture_output=True, text=True,
        )
        if p.returncode != 0:
            sys.exit(f"spark failed:\n{p.stderr[-4000:]}")
        results["spark (files)"] = json.loads(p.stdout.strip().splitlines()[-1])

    print()
    eps = {k: report(k, r, n) for k, r in results.items()}
    if "spark (files)" in eps:
        for k in ("runnel (files)", "runnel (topic)"):
            print(f"{k} / spark (files): {eps[k] / eps['spark (files)']:.1f}x tweets/s")
    if live:
        ms = live["latency_ms"]
        print(
            f"runnel live (topic)    {live['rate']} tweets/s, {live['probes']} probes ({live['lost']} lost): "
            f"end-to-end latency p50 {percentile(ms, 0.5):.0f} ms, p99 {percentile(ms, 0.99):.0f} ms, "
            f"max {max(ms) if ms else float('nan'):.0f} ms"
        )
        results["runnel live (topic)"] = live
    print(json.dumps(results))


if __name__ == "__main__":
    main()
