"""A history checker for replicated logs, after Jepsen's Kafka checks.

Writers send unique values with acks=all and idempotence while faults are injected; the
`History` records what the cluster acknowledged (partition, offset, value) and what failed
(indeterminate: maybe written, maybe not). Afterwards every partition is read back whole
and `check` reports:

- lost: acknowledged values that are not in the log;
- duplicates: values that appear more than once;
- changed: acknowledged offsets that now hold another value;
- reordered: values of one writer on one partition out of send order (each writer's
  values carry an increasing sequence number);
- unexpected: values in the log that were never sent.

Indeterminate values may appear (once) or not; they are not counted as lost.
"""

import threading
import time

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition


class History:
    def __init__(self):
        self.lock = threading.Lock()
        self.sent = {}           # value -> (writer, seq)
        self.acked = {}          # value -> (partition, offset)
        self.failed = {}         # value -> error string (indeterminate)

    def note_sent(self, value, writer, seq):
        with self.lock:
            self.sent[value] = (writer, seq)

    def note_result(self, value, err, partition, offset):
        with self.lock:
            if err is None:
                self.acked[value] = (partition, offset)
            else:
                self.failed[value] = str(err)


class Writer(threading.Thread):
    """Produces unique values "<writer>-<seq>" round-robin over `partitions` until
    `stop` is set, at most `rate` per second."""

    def __init__(self, bootstrap, topic, partitions, history, name, stop, rate=500):
        super().__init__(daemon=True, name=name)
        self.producer = Producer({
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "enable.idempotence": True,
            "message.timeout.ms": 30000,
            "linger.ms": 2,
            "retry.backoff.ms": 100,
            "topic.metadata.refresh.interval.ms": 1000,
        })
        self.topic, self.partitions, self.history = topic, partitions, history
        self.stop, self.rate, self.writer = stop, rate, name

    def run(self):
        seq = 0
        next_at = time.monotonic()
        while not self.stop.is_set():
            value = f"{self.writer}-{seq}"
            partition = seq % self.partitions
            self.history.note_sent(value, self.writer, seq)

            def done(err, msg, value=value):
                p, o = (msg.partition(), msg.offset()) if err is None else (None, None)
                self.history.note_result(value, err, p, o)

            while True:
                try:
                    self.producer.produce(self.topic, value=value.encode(), partition=partition,
                                          on_delivery=done)
                    break
                except BufferError:
                    self.producer.poll(0.05)
            self.producer.poll(0)
            seq += 1
            next_at += 1.0 / self.rate
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        # Every send ends acknowledged or failed (message.timeout.ms bounds it).
        self.producer.flush(60)


def high_watermark(consumer, topic, partition, timeout=30):
    """The partition's high watermark, retried while leadership moves (a preferred-leader
    election right after a fault answers NOT_LEADER_OR_FOLLOWER for a moment; librdkafka
    hands that to the caller instead of retrying)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)[1]
        except KafkaException as e:
            retriable = e.args[0].code() in (KafkaError.NOT_LEADER_FOR_PARTITION,
                                              KafkaError.LEADER_NOT_AVAILABLE)
            if not retriable or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def read_back(bootstrap, topic, partitions, timeout=60):
    """Every record of every partition, as {partition: [(offset, value)]}, read up to the
    high watermark each partition has when reading starts."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"history-{time.time()}",
                         "enable.auto.commit": False, "enable.partition.eof": True,
                         "auto.offset.reset": "earliest"})
    try:
        ends = {}
        for p in range(partitions):
            ends[p] = high_watermark(consumer, topic, p)
        consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        out = {p: [] for p in range(partitions)}
        done = {p for p in range(partitions) if ends[p] == 0}
        deadline = time.monotonic() + timeout
        while len(done) < partitions and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    if msg.offset() >= ends[msg.partition()]:
                        done.add(msg.partition())
                    continue
                raise AssertionError(f"read-back error: {msg.error()}")
            out[msg.partition()].append((msg.offset(), msg.value().decode()))
            if msg.offset() + 1 >= ends[msg.partition()]:
                done.add(msg.partition())
        assert len(done) == partitions, f"read-back did not finish: {len(done)} of {partitions} partitions"
        return out
    finally:
        consumer.close()


def check(history, log):
    """The anomalies in `log` (from read_back) against `history`; all lists empty = good."""
    where = {}
    duplicates, unexpected, reordered, changed = [], [], [], []
    for p, records in log.items():
        last_seq = {}
        for offset, value in records:
            if value in where:
                duplicates.append((value, where[value], (p, offset)))
                continue
            where[value] = (p, offset)
            if value not in history.sent:
                unexpected.append((p, offset, value))
                continue
            writer, seq = history.sent[value]
            if seq <= last_seq.get(writer, -1):
                reordered.append((p, offset, value, last_seq[writer]))
            last_seq[writer] = max(seq, last_seq.get(writer, -1))
    by_offset = {pos: v for v, pos in where.items()}
    lost = [v for v in history.acked if v not in where]
    for value, pos in history.acked.items():
        now = by_offset.get(pos)
        if now is not None and now != value:
            changed.append((pos, value, now))
    return {"lost": lost, "duplicates": duplicates, "changed": changed,
            "reordered": reordered, "unexpected": unexpected}


def summary(history, anomalies):
    return (f"sent {len(history.sent)}, acknowledged {len(history.acked)}, "
            f"indeterminate {len(history.failed)}; "
            + ", ".join(f"{k} {len(v)}" for k, v in anomalies.items()))
