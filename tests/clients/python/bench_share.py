"""Share groups vs a classic consumer group on one topic, in one run: prints records/s
read through 1 and 5 share consumers (confluent-kafka's ShareConsumer, implicit
acknowledgement, each consumer its own process) and through 1 classic consumer, then
the redelivery latency after a share consumer holding records is killed with -9.

    RUNNEL_BIN=target/release/runnel python bench_share.py [records]

A program that prints figures, not a test: nothing here asserts a speed.
"""

import multiprocessing as mp
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import ck  # noqa: E402
from harness import Broker, unique  # noqa: E402


def share_reader(bootstrap, group, topic, counter, stop):
    from confluent_kafka import ShareConsumer

    c = ShareConsumer({"bootstrap.servers": bootstrap, "group.id": group, "log_level": 3})
    c.subscribe([topic])
    while not stop.is_set():
        n = sum(1 for m in c.poll(0.2) if not m.error())
        if n:
            with counter.get_lock():
                counter.value += n
    c.close()


def share_holder(bootstrap, group, topic, held):
    """Polls once in explicit mode and never acknowledges: waits to be killed."""
    from confluent_kafka import ShareConsumer

    c = ShareConsumer({"bootstrap.servers": bootstrap, "group.id": group, "log_level": 3,
                       "share.acknowledgement.mode": "explicit"})
    c.subscribe([topic])
    while True:
        msgs = [m for m in c.poll(0.5) if not m.error()]
        if msgs:
            held.value = len(msgs)
            time.sleep(3600)


def run_share(broker, topic, consumers, n):
    group = unique("bench-sg")
    set_earliest(broker, group)
    ctx = mp.get_context("spawn")
    counter, stop = ctx.Value("l", 0), ctx.Event()
    procs = [ctx.Process(target=share_reader, args=(broker.bootstrap, group, topic, counter, stop))
             for _ in range(consumers)]
    t0 = time.monotonic()
    for p in procs:
        p.start()
    first = None
    while counter.value < n:
        if first is None and counter.value > 0:
            first = time.monotonic()
        time.sleep(0.01)
    elapsed = time.monotonic() - (first or t0)
    stop.set()
    for p in procs:
        p.join(30)
    return counter.value / elapsed, counter.value


def run_classic(broker, topic, n):
    from confluent_kafka import Consumer

    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": unique("bench-cg"),
                  "auto.offset.reset": "earliest", "log_level": 3})
    c.subscribe([topic])
    got, first = 0, None
    while got < n:
        m = c.poll(0.2)
        if m is not None and not m.error():
            first = first or time.monotonic()
            got += 1
    elapsed = time.monotonic() - first
    c.close()
    return got / elapsed


def set_earliest(broker, group):
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource

    a = ck.admin(broker)
    r = ConfigResource(ConfigResource.Type.GROUP, group, incremental_configs=[
        ConfigEntry("share.auto.offset.reset", "earliest",
                    incremental_operation=AlterConfigOpType.SET)])
    a.incremental_alter_configs([r])[r].result(timeout=10)


def redelivery_latency(broker):
    # A topic of a few records, all of which the holder acquires: whatever the next
    # consumer gets is a redelivery.
    topic = ck.create_topic(broker, unique("bench-kill"), 1)
    ck.produce_all(ck.producer(broker), topic, ({"value": b"y"} for _ in range(10)))
    group = unique("bench-kill")
    set_earliest(broker, group)
    ctx = mp.get_context("spawn")
    held = ctx.Value("l", 0)
    holder = ctx.Process(target=share_holder, args=(broker.bootstrap, group, topic, held))
    holder.start()
    while held.value == 0:
        time.sleep(0.01)
    holder.kill()
    holder.join()
    killed = time.monotonic()
    from confluent_kafka import ShareConsumer

    c = ShareConsumer({"bootstrap.servers": broker.bootstrap, "group.id": group, "log_level": 3})
    c.subscribe([topic])
    while True:
        if any(not m.error() for m in c.poll(0.05)):
            latency = time.monotonic() - killed
            break
    c.close()
    return latency


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    lock_ms = 2000
    with tempfile.TemporaryDirectory() as d:
        b = Broker(d, {"group.share.min.record.lock.duration.ms": 500,
                       "group.share.record.lock.duration.ms": lock_ms}, name="bench")
        b.start()
        try:
            topic = ck.create_topic(b, unique("bench"), 2)
            p = ck.producer(b, linger_ms=20)
            ck.produce_all(p, topic, ({"value": b"x" * 100, "partition": i % 2} for i in range(n)))
            binary = os.environ.get("RUNNEL_BIN", "(default)")
            print(f"broker {binary}; {n} records of 100 bytes on 2 partitions")
            print(f"classic group, 1 consumer : {run_classic(b, topic, n):10.0f} records/s")
            for k in (1, 5):
                rate, got = run_share(b, topic, k, n)
                print(f"share group, {k} consumer(s): {rate:10.0f} records/s ({got} delivered)")
            lat = redelivery_latency(b)
            print(f"redelivery after kill -9  : {lat:.2f} s (group.share.record.lock.duration.ms={lock_ms})")
        finally:
            b.stop()


if __name__ == "__main__":
    main()
