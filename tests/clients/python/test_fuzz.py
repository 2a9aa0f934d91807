"""A seeded wire fuzzer: mutated valid requests of many APIs against a real broker.

Valid frames for ~20 APIs are built with kwire, then mutated (bytes flipped, inserted,
cut; counts and lengths replaced with huge or negative values; size prefixes that lie;
gzip bombs in produce batches). The broker must stay alive, keep its peak RSS under a
bound, and afterwards serve a normal client correctly.

RUNNEL_FUZZ_SEED sets the seed (printed; default 20261206), RUNNEL_FUZZ_SECONDS the
duration (default 25). A failing seed reproduces the same request sequence.
"""

import gzip
import os
import random
import socket
import struct
import time

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

import kwire
from harness import unique
from kwire import compact_string, nbytes, string, uvarint

SEED = int(os.environ.get("RUNNEL_FUZZ_SEED", "20261206"))
SECONDS = float(os.environ.get("RUNNEL_FUZZ_SECONDS", "25"))
RSS_BOUND_KB = 768 * 1024


def i16(n):
    return struct.pack(">h", n)


def i32(n):
    return struct.pack(">i", n)


def i64(n):
    return struct.pack(">q", n)


def arr(items):
    return i32(len(items)) + b"".join(items)


def gzip_batch(payload):
    """A one-record gzip batch whose record inflates to `payload`."""
    rec = kwire.record(b"k", payload)
    comp = gzip.compress(rec, compresslevel=9)
    ts = int(time.time() * 1000)
    after_crc = struct.pack(">hiqqqhii", 1, 0, ts, ts, -1, -1, -1, 1) + comp
    after_length = struct.pack(">ibI", -1, 2, kwire.crc32c(after_crc)) + after_crc
    return struct.pack(">qi", 0, len(after_length)) + after_length


def valid_requests(topic, compacted, group):
    """(api_key, version, header_version, body) for requests the broker accepts."""
    batch = kwire.record_batch([(b"k", b"v" * 20), (None, b"w")])
    bomb = gzip_batch(b"\0" * (8 * 1024 * 1024))
    produce = lambda t, b: (string(None) + struct.pack(">hi", 1, 5000)
                            + arr([string(t) + arr([i32(0) + nbytes(b)])]))
    return [
        (18, 0, 1, b""),
        (3, 1, 1, arr([string(topic), string(compacted)])),
        (0, 3, 1, produce(topic, batch)),
        (0, 3, 1, produce(compacted, batch)),
        (0, 7, 1, produce(compacted, bomb)),
        (0, 7, 1, produce(topic, bomb)),
        (1, 4, 1, struct.pack(">iiiib", -1, 10, 1, 1 << 20, 0)
         + arr([string(topic) + arr([struct.pack(">iqi", 0, 0, 1 << 20)])])),
        (2, 1, 1, i32(-1) + arr([string(topic) + arr([i32(0) + i64(-1)])])),
        (19, 2, 1, arr([string(unique("fz")) + struct.pack(">ihii", 2, 1, 0, 0)]) + struct.pack(">ib", 5000, 0)),
        (20, 1, 1, arr([string(unique("nope"))]) + i32(5000)),
        (10, 1, 1, string(group) + b"\0"),
        (11, 2, 1, string(group) + i32(10000) + i32(30000) + string("") + string("consumer")
         + arr([string("range") + nbytes(i16(0) + arr([string(topic)]) + nbytes(b""))])),
        (14, 1, 1, string(group) + i32(1) + string("m") + arr([])),
        (12, 1, 1, string(group) + i32(1) + string("m")),
        (13, 1, 1, string(group) + string("m")),
        (8, 2, 1, string(group) + i32(-1) + string("") + i64(-1)
         + arr([string(topic) + arr([i32(0) + i64(1) + string("meta")])])),
        (9, 1, 1, string(group) + arr([string(topic) + arr([i32(0)])])),
        (16, 1, 1, b""),
        (15, 1, 1, arr([string(group)])),
        (32, 1, 1, arr([b"\x02" + string(topic) + i32(-1)]) + b"\0"),
        (22, 0, 1, string(None) + i32(60000)),
        (37, 0, 1, arr([string(topic) + i32(3) + i32(-1)]) + i32(5000) + b"\0"),
        (21, 0, 1, arr([string(topic) + arr([i32(0) + i64(0)])]) + i32(5000)),
        (68, 1, 2, compact_string(group + "-848") + compact_string("") + i32(0) + compact_string(None)
         + compact_string(None) + i32(30000) + uvarint(0) + compact_string("fz.*")
         + compact_string(None) + uvarint(1) + uvarint(0)),
        (66, 1, 2, uvarint(1) + uvarint(1) + uvarint(1) + i64(-1) + uvarint(0)),
    ]


def mutate(rng, body):
    b = bytearray(body)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(6)
        if op == 0 and b:  # flip bytes
            for _ in range(rng.randint(1, 8)):
                b[rng.randrange(len(b))] = rng.randrange(256)
        elif op == 1:  # insert junk
            at = rng.randint(0, len(b))
            b[at:at] = os.urandom(rng.randint(1, 64))
        elif op == 2 and b:  # truncate
            del b[rng.randrange(len(b)):]
        elif op == 3 and len(b) >= 4:  # a huge or negative count / length
            at = rng.randrange(len(b) - 3)
            b[at:at + 4] = struct.pack(">i", rng.choice([0x7FFFFFFF, -1, -2, 1 << 24, 0x7FFF0000]))
        elif op == 4 and len(b) >= 2:  # a huge or negative 16-bit string length
            at = rng.randrange(len(b) - 1)
            b[at:at + 2] = struct.pack(">h", rng.choice([0x7FFF, -1, -2]))
        elif op == 5:  # a varint that never ends
            at = rng.randint(0, len(b))
            b[at:at] = b"\xff" * rng.randint(5, 12)
    return bytes(b)


def frame(api, version, header_version, corr, body, client_id="fuzz"):
    header = struct.pack(">hhi", api, version, corr) + string(client_id)
    if header_version >= 2:
        header += uvarint(0)
    return header + body


def vm_hwm(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


@pytest.mark.timeout_s(int(SECONDS) + 150)
def test_wire_fuzz(start_broker):
    print(f"\nfuzz seed {SEED} (RUNNEL_FUZZ_SEED), {SECONDS:.0f} s (RUNNEL_FUZZ_SECONDS)")
    rng = random.Random(SEED)
    b = start_broker({"request.read.timeout.ms": 1000, "connections.max.idle.ms": 5000})
    pid = b.proc.pid
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    topic, compacted, group = unique("fz"), unique("fzc"), unique("fzg")
    for f in admin.create_topics([NewTopic(topic, 2, 1),
                                  NewTopic(compacted, 1, 1, config={"cleanup.policy": "compact"})]).values():
        f.result(30)
    templates = valid_requests(topic, compacted, group)
    sent = answered = closed = 0
    corr = 0
    sock = None
    deadline = time.monotonic() + SECONDS
    while time.monotonic() < deadline:
        if sock is None:
            sock = socket.create_connection(b.address, timeout=2)
        api, version, hv, body = rng.choice(templates)
        corr += 1
        choice = rng.random()
        if choice < 0.1:
            # An honest frame (keeps the state machines moving).
            data = frame(api, version, hv, corr, body)
            prefix = struct.pack(">i", len(data))
        elif choice < 0.15:
            # A size prefix that lies upward: the broker waits for bytes that never come.
            data = frame(api, version, hv, corr, mutate(rng, body))
            prefix = struct.pack(">i", rng.choice([len(data) + 1000, 99 * 1024 * 1024, 0x7FFFFFFF]))
        elif choice < 0.2:
            # Header fields mutated too (api key, version, client id length).
            data = mutate(rng, frame(api, version, hv, corr, body))
            prefix = struct.pack(">i", len(data))
        else:
            data = frame(api, version, hv, corr, mutate(rng, body))
            prefix = struct.pack(">i", len(data))
        sent += 1
        try:
            sock.sendall(prefix + data)
            sock.settimeout(0.25 if choice >= 0.1 else 5)
            head = sock.recv(4)
            if not head:
                raise ConnectionError("closed")
            (size,) = struct.unpack(">i", head.rjust(4, b"\0"))
            left = size
            while left > 0:
                chunk = sock.recv(min(left, 1 << 20))
                if not chunk:
                    raise ConnectionError("closed mid-response")
                left -= len(chunk)
            answered += 1
        except (OSError, ConnectionError, struct.error):
            closed += 1
            sock.close()
            sock = None
        if sent % 200 == 0:
            assert b.alive(), "broker died\n" + b.log_tail()
            assert vm_hwm(pid) < RSS_BOUND_KB, f"VmHWM {vm_hwm(pid)} kB"
    if sock is not None:
        sock.close()
    assert b.alive(), "broker died\n" + b.log_tail()
    peak = vm_hwm(pid)
    print(f"sent {sent} requests: {answered} answered, {closed} connections ended; VmHWM {peak // 1024} MiB")
    assert peak < RSS_BOUND_KB

    # A normal client still works end to end.
    check = unique("after")
    admin.create_topics([NewTopic(check, 1, 1)])[check].result(30)
    p = Producer({"bootstrap.servers": b.bootstrap})
    for i in range(50):
        p.produce(check, key=str(i).encode(), value=f"v{i}".encode())
    assert p.flush(30) == 0
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": unique("after-g"),
                  "auto.offset.reset": "earliest"})
    c.subscribe([check])
    got = []
    end = time.monotonic() + 30
    while len(got) < 50 and time.monotonic() < end:
        m = c.poll(1)
        if m is not None and m.error() is None:
            got.append(m.value())
    c.close()
    assert got == [f"v{i}".encode() for i in range(50)]


def sasl_templates():
    """(api, version, body) frames of SASL exchanges: handshakes for each mechanism,
    PLAIN tokens and SCRAM client-first / client-final messages."""
    scram_first = b"n,,n=fuzz,r=" + b"a" * 24
    scram_final = b"c=biws,r=" + b"a" * 40 + b",p=" + b"QUJD" * 11
    auth = lambda token: nbytes(token)
    return [
        (17, 1, string("PLAIN")),
        (17, 1, string("SCRAM-SHA-256")),
        (17, 1, string("SCRAM-SHA-512")),
        (17, 0, string("PLAIN")),
        (36, 1, auth(b"\0fuzz\0secret")),
        (36, 0, auth(scram_first)),
        (36, 2, compact_string(scram_first)[:0] + uvarint(len(scram_first) + 1) + scram_first + uvarint(0)),
        (36, 1, auth(scram_final)),
        (18, 0, b""),
    ]


def test_sasl_exchange_fuzz(start_broker):
    """Mutated SaslHandshake / SaslAuthenticate exchanges (and raw v0 tokens) on a
    SASL_PLAINTEXT listener: every one refused or answered, the broker alive and still
    authenticating an honest client."""
    seconds = max(4.0, SECONDS / 4)
    rng = random.Random(SEED + 1)
    jaas = ('org.apache.kafka.common.security.plain.PlainLoginModule required '
            'user_fuzz="secret";')
    b = start_broker({"listeners": "SASL_PLAINTEXT://127.0.0.1:0",
                      "sasl.enabled.mechanisms": "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512",
                      "sasl.mechanism.inter.broker.protocol": "PLAIN",
                      "sasl.jaas.config": jaas, "request.read.timeout.ms": 1000})
    templates = sasl_templates()
    sent = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.create_connection(b.address, timeout=2) as sock:
            sock.settimeout(0.25)
            for corr in range(rng.randint(1, 4)):
                api, version, body = rng.choice(templates)
                hv = 2 if (api == 36 and version == 2) else 1
                if rng.random() < 0.2:
                    data = rng.choice([body, mutate(rng, body)])  # a raw (v0-style) token
                else:
                    data = frame(api, version, hv, corr, mutate(rng, body) if rng.random() < 0.7 else body)
                sent += 1
                try:
                    sock.sendall(struct.pack(">i", len(data)) + data)
                    head = sock.recv(4)
                    if not head:
                        break
                    (size,) = struct.unpack(">i", head.rjust(4, b"\0"))
                    while size > 0:
                        chunk = sock.recv(min(size, 1 << 16))
                        if not chunk:
                            break
                        size -= len(chunk)
                except (OSError, struct.error):
                    break
        if sent % 100 == 0:
            assert b.alive(), "broker died\n" + b.log_tail()
    assert b.alive(), "broker died\n" + b.log_tail()
    print(f"sent {sent} SASL frames")
    with kwire.Conn(*b.address) as c:
        assert c.request(17, 1, string("PLAIN")).int16() == 0
        r = c.request(36, 1, nbytes(b"\0fuzz\0secret"))
        assert r.int16() == 0
        err, _ = c.api_versions_v0()
        assert err == 0
