"""Helpers over confluent-kafka (librdkafka) used by several test modules.

Consumer groups are not implemented yet (issue 3), so consumers here always use
assign() with explicit offsets and never subscribe or commit. confluent-kafka insists
on a group.id, so one is set, with auto-commit and offset store off.
"""

import time

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

QUIET = {"log_level": 3}  # librdkafka logs errors only; tests assert on outcomes


def producer(broker, conf=None, **kw):
    """kw: librdkafka properties with _ for . (linger_ms=5); conf: a dict passed as is."""
    c = {"bootstrap.servers": broker.bootstrap, "linger.ms": 5, **QUIET}
    c.update({k.replace("_", "."): v for k, v in kw.items()})
    c.update(conf or {})
    return Producer(c)


def consumer(broker, conf=None, **kw):
    c = {
        "bootstrap.servers": broker.bootstrap,
        "group.id": "runnel-tests-assign-only",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": True,
        **QUIET,
    }
    c.update({k.replace("_", "."): v for k, v in kw.items()})
    c.update(conf or {})
    return Consumer(c)


def admin(broker):
    return AdminClient({"bootstrap.servers": broker.bootstrap, **QUIET})


def create_topic(broker, name, partitions=1, timeout=15, replication_factor=1):
    a = admin(broker)
    fs = a.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=replication_factor)],
                         operation_timeout=timeout, request_timeout=timeout)
    fs[name].result(timeout)
    wait_for_topic(a, name, partitions)
    return name


def wait_for_topic(a, name, partitions, timeout=10):
    deadline = time.monotonic() + timeout
    while True:
        md = a.list_topics(topic=name, timeout=5)
        t = md.topics.get(name)
        if t is not None and t.error is None and len(t.partitions) == partitions:
            return t
        if time.monotonic() > deadline:
            raise AssertionError(f"topic {name} not visible with {partitions} partitions: "
                                 f"{t and t.error} {t and len(t.partitions)}")
        time.sleep(0.1)


class Delivery:
    """Collects delivery reports."""

    def __init__(self):
        self.ok = []  # (partition, offset, key, value)
        self.failed = []  # (error, key, value)

    def __call__(self, err, msg):
        if err is not None:
            self.failed.append((err, msg.key(), msg.value()))
        else:
            self.ok.append((msg.partition(), msg.offset(), msg.key(), msg.value()))


def produce_all(p, topic, records, partition=None, timeout=30, **kw):
    """records: iterable of dicts with value/key/headers/timestamp. Returns Delivery."""
    d = Delivery()
    for r in records:
        args = dict(kw)
        args.update(r)
        if partition is not None:
            args["partition"] = partition
        while True:
            try:
                p.produce(topic, on_delivery=d, **args)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    left = p.flush(timeout)
    assert left == 0, f"{left} messages still in the producer queue after {timeout}s"
    return d


def consume(broker, topic, partition=0, start=0, count=None, timeout=20, until_eof=True, **conf):
    """Assign (topic, partition) at `start` and read until `count` records (if given) or
    end of partition. Returns the list of Message objects. Fails on any error event
    for this partition."""
    c = consumer(broker, **conf)
    try:
        c.assign([TopicPartition(topic, partition, start)])
        out = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if count is not None and len(out) >= count:
                break
            m = c.poll(0.2)
            if m is None:
                continue
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    if count is None and until_eof:
                        return out
                    continue
                if m.topic() == topic or m.error().fatal():
                    raise AssertionError(f"consumer error on {topic}[{partition}]: {m.error()}")
                continue  # group-coordinator noise: no groups yet (issue 3)
            out.append(m)
        if count is not None:
            assert len(out) >= count, f"read {len(out)} of {count} records from {topic}[{partition}] in {timeout}s"
        else:
            raise AssertionError(f"no end of partition {topic}[{partition}] within {timeout}s after {len(out)} records")
        return out
    finally:
        c.close()


def watermarks(broker, topic, partition=0, timeout=10):
    c = consumer(broker)
    try:
        return c.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout, cached=False)
    finally:
        c.close()
