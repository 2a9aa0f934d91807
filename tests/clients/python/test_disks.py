"""Several data disks: a log dir that fills up goes offline alone, the broker keeps
serving the other one, and after a restart every acknowledged record is there.

The small disk is a tmpfs of fixed size that the test mounts (CI runs as root)."""

import os
import subprocess

import pytest
from confluent_kafka import Producer

import ck
from harness import unique


@pytest.fixture
def small_disk(tmp_path):
    path = tmp_path / "small-disk"
    path.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(path)], capture_output=True, text=True)
    assert r.returncode == 0, f"this test mounts a 3 MiB tmpfs and needs root: {r.stderr.strip()}"
    try:
        yield str(path)
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def partition_in(dirpath, topic):
    found = [int(d.rsplit("-", 1)[1]) for d in os.listdir(dirpath) if d.startswith(topic + "-")]
    assert len(found) == 1, f"expected one partition of {topic} in {dirpath}: {os.listdir(dirpath)}"
    return found[0]


@pytest.mark.timeout_s(120)
def test_full_disk_goes_offline_alone_and_loses_nothing(start_broker, tmp_path, small_disk):
    big = str(tmp_path / "big-disk")
    b = start_broker(log__dirs=f"{big},{small_disk}", log__segment__bytes=512 * 1024)
    topic = ck.create_topic(b, unique("full"), partitions=2)
    # A partition's directory is made by its first write: one record each shows where.
    for part in (0, 1):
        assert ck.produce_all(ck.producer(b), topic, [{"value": b"first"}], partition=part).failed == []
    on_small = partition_in(small_disk, topic)
    on_big = 1 - on_small
    acked, failed = [b"first"], []

    def report(err, msg):
        (failed if err else acked).append(msg.value() if not err else err)

    p = Producer({"bootstrap.servers": b.bootstrap, "acks": "all", "message.timeout.ms": 4000,
                  "linger.ms": 5, "enable.idempotence": True})
    value = lambda i: f"{i:08d}".encode() + b"x" * 1000
    for i in range(6000):  # ~6 MB into a 3 MiB disk
        p.produce(topic, value=value(i), partition=on_small, on_delivery=report)
        if i % 200 == 0:
            p.poll(0)
    p.flush(30)
    assert acked, "some records fit before the disk filled"
    assert failed, "writes beyond the disk's size were refused"
    assert all(e.name() in ("KAFKA_STORAGE_ERROR", "_MSG_TIMED_OUT", "NOT_LEADER_FOR_PARTITION", "LEADER_NOT_AVAILABLE")
               for e in failed), {e.name() for e in failed}
    # The other disk keeps serving.
    d = ck.produce_all(ck.producer(b), topic, [{"value": b"still-here"}], partition=on_big)
    assert d.failed == []
    md = ck.admin(b).list_topics(topic, timeout=10).topics[topic].partitions
    assert md[on_small].leader == -1 and md[on_small].error is not None, "the full disk's partition is reported offline"
    assert md[on_big].leader == 1
    # After a restart everything acknowledged is there, in order and intact.
    b.restart()
    got = ck.consume(b, topic, partition=on_small, start=0, count=len(acked), timeout=30)
    assert [m.value() for m in got] == acked
