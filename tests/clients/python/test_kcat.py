"""kcat (Debian's, on librdkafka 2.0.2: an old client that must keep working)."""

import json
import shutil
import subprocess

import pytest

import ck
from harness import unique

KCAT = shutil.which("kcat") or shutil.which("kafkacat")


def kcat(broker, *args, input=None, timeout=30, check=True):
    assert KCAT, "kcat is not installed (scripts/test.sh installs it with apt-get)"
    r = subprocess.run([KCAT, "-b", broker.bootstrap, "-X", "log_level=3", *args], input=input,
                       capture_output=True, timeout=timeout)
    if check:
        assert r.returncode == 0, f"kcat {' '.join(args)} exited {r.returncode}: {r.stderr.decode(errors='replace')}"
    return r


def test_produce_with_keys_and_headers_then_consume(broker):
    topic = unique("kcat")
    lines = b"".join(f"key{i}:value {i}\n".encode() for i in range(50))
    kcat(broker, "-P", "-t", topic, "-p", "0", "-K:", "-H", "source=kcat", "-H", "n=1", input=lines)
    r = kcat(broker, "-C", "-t", topic, "-o", "beginning", "-e", "-f", "%p|%o|%k|%s|%h\n")
    got = r.stdout.decode().splitlines()
    assert got == [f"0|{i}|key{i}|value {i}|source=kcat,n=1" for i in range(50)]


def test_produce_auto_creates_and_consume_count(broker):
    topic = unique("kcatauto")
    kcat(broker, "-P", "-t", topic, input=b"one\ntwo\nthree\n")
    r = kcat(broker, "-C", "-t", topic, "-o", "beginning", "-c", "3", "-f", "%o:%s\n")
    assert r.stdout.decode().splitlines() == ["0:one", "1:two", "2:three"]
    # From an offset, and from the end relative (-o -1 = last record).
    r = kcat(broker, "-C", "-t", topic, "-o", "1", "-e", "-f", "%s\n")
    assert r.stdout.decode().splitlines() == ["two", "three"]
    r = kcat(broker, "-C", "-t", topic, "-o", "-1", "-e", "-f", "%s\n")
    assert r.stdout.decode().splitlines() == ["three"]


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_compressed_produce_and_consume(broker, codec):
    topic = unique(f"kcat{codec}")
    lines = [f"{i} ".encode() + b"abc" * 100 for i in range(300)]
    kcat(broker, "-P", "-t", topic, "-z", codec, "-X", "linger.ms=50", input=b"\n".join(lines) + b"\n")
    r = kcat(broker, "-C", "-t", topic, "-o", "beginning", "-e", "-f", "%s\n")
    assert r.stdout.splitlines() == lines


def test_idempotent_produce(broker):
    topic = unique("kcatidem")
    kcat(broker, "-P", "-t", topic, "-X", "enable.idempotence=true", input=b"".join(b"%d\n" % i for i in range(1000)))
    r = kcat(broker, "-C", "-t", topic, "-o", "beginning", "-e", "-f", "%o %s\n")
    assert r.stdout.decode().splitlines() == [f"{i} {i}" for i in range(1000)]


def test_metadata_listing(broker):
    topic = ck.create_topic(broker, unique("kcatmd"), partitions=3)
    r = kcat(broker, "-L", "-J")
    md = json.loads(r.stdout)
    assert [(b["name"]) for b in md["brokers"]] == [broker.bootstrap]
    node = md["brokers"][0]["id"]
    t = {x["topic"]: x for x in md["topics"]}[topic]
    assert sorted(p["partition"] for p in t["partitions"]) == [0, 1, 2]
    for p in t["partitions"]:
        assert p["leader"] == node
        assert [r["id"] for r in p["replicas"]] == [node]
        assert [r["id"] for r in p["isrs"]] == [node]
    # The plain listing names the topic too, for one topic only.
    r = kcat(broker, "-L", "-t", topic)
    out = r.stdout.decode()
    assert f'topic "{topic}" with 3 partitions' in out
    assert "1 brokers" in out


def test_query_offsets_by_timestamp(broker):
    topic = ck.create_topic(broker, unique("kcatq"))
    base = 1_690_000_000_000
    p = ck.producer(broker, linger_ms=0)
    for i in range(5):
        d = ck.produce_all(p, topic, [{"value": b"x", "timestamp": base + 1000 * i}], partition=0)
        assert d.failed == []

    def query(ts):
        r = kcat(broker, "-Q", "-t", f"{topic}:0:{ts}")
        line = r.stdout.decode().strip()
        # e.g. "kcatq-... [0] offset 3"
        assert line.startswith(f"{topic} [0] offset "), line
        return int(line.rsplit(" ", 1)[1])

    assert query(base) == 0
    assert query(base + 2500) == 3
    assert query(base + 4000) == 4
    assert query(-1) == 5  # latest
    assert query(-2) == 0  # earliest
