"""End-to-end latency of a running Runnel query (trending_live.sql): tweets from the
benchmark's file are produced to the input topic at a fixed rate; every `--every`
seconds a probe tweet with a hashtag of its own is produced, and the time until that
hashtag's count appears in the output topic is its end-to-end latency (produce call to
output record consumed). Needs confluent-kafka. Prints one JSON line."""
import argparse
import itertools
import json
import time

from confluent_kafka import Consumer, Producer, TopicPartition

a = argparse.ArgumentParser()
a.add_argument("--bootstrap", required=True)
a.add_argument("--topic", required=True)
a.add_argument("--output", required=True)
a.add_argument("--data", required=True)
a.add_argument("--rate", type=int, default=20000)
a.add_argument("--seconds", type=float, default=20)
a.add_argument("--every", type=float, default=0.25)
args = a.parse_args()

producer = Producer({"bootstrap.servers": args.bootstrap, "linger.ms": 1})
consumer = Consumer({
    "bootstrap.servers": args.bootstrap, "group.id": "latency-probe",
    "enable.auto.commit": False, "fetch.wait.max.ms": 1, "auto.offset.reset": "latest",
})
md = consumer.list_topics(args.output, timeout=10)
parts = [TopicPartition(args.output, p, -1) for p in md.topics[args.output].partitions]
consumer.assign(parts)

with open(args.data) as f:
    lines = [line.rstrip("\n") for line in itertools.islice(f, int(args.rate * args.seconds) + 1)]
sent = {}       # probe tag -> produce time
latencies = []
last_ts = None
i = 0
started = time.time()
next_probe = started + 1.0
k = 0
while time.time() - started < args.seconds:
    # Produce this slice's share of the rate (10 ms slices).
    due = int((time.time() - started) * args.rate)
    while i < due:
        line = lines[i % len(lines)]
        if i < len(lines):
            last_ts = json.loads(line)["timestamp_ms"]
            producer.produce(args.topic, line.encode())
        else:  # past the file: the same tweets, moved forward in event time
            t = json.loads(line)
            t["timestamp_ms"] = str(int(t["timestamp_ms"]) + (i // len(lines)) * 10_000_000)
            last_ts = t["timestamp_ms"]
            producer.produce(args.topic, json.dumps(t).encode())
        i += 1
    if time.time() >= next_probe and last_ts is not None:
        tag = f"probe{k}"
        k += 1
        probe = {"entities": {"hashtags": [{"text": tag}]}, "timestamp_ms": last_ts}
        producer.produce(args.topic, json.dumps(probe).encode())
        producer.poll(0)
        sent[tag] = time.time()
        next_probe += args.every
    producer.poll(0)
    m = consumer.poll(0.005)
    while m is not None:
        if not m.error() and m.key() is not None:
            tag = m.key().decode()
            if tag in sent:
                latencies.append((time.time() - sent.pop(tag)) * 1000)
        m = consumer.poll(0)
producer.flush(10)
deadline = time.time() + 10
while sent and time.time() < deadline:
    m = consumer.poll(0.05)
    if m is not None and not m.error() and m.key() is not None and m.key().decode() in sent:
        latencies.append((time.time() - sent.pop(m.key().decode())) * 1000)
print(json.dumps({"rate": args.rate, "sent": i, "probes": k, "lost": len(sent), "latency_ms": latencies}))
