"""A minimal, hand-written Kafka wire codec for tests that no real client can express:
malformed frames, duplicate or out-of-order idempotent batches, corrupt CRCs.

Only the few request versions the tests need are encoded, straight from Kafka's
message schemas (clients/src/main/resources/common/message/*.json). Nothing here
is shared with the broker's own code, on purpose: it is a second opinion.
"""

import socket
import struct
import time

# API keys
PRODUCE = 0
FETCH = 1
LIST_OFFSETS = 2
METADATA = 3
API_VERSIONS = 18
INIT_PRODUCER_ID = 22

# Error codes
NONE = 0
CORRUPT_MESSAGE = 2
MESSAGE_TOO_LARGE = 10
UNSUPPORTED_VERSION = 35
OUT_OF_ORDER_SEQUENCE_NUMBER = 45
DUPLICATE_SEQUENCE_NUMBER = 46
INVALID_REQUEST = 42
INVALID_RECORD = 87

# ---------------------------------------------------------------- CRC-32C (Castagnoli)

_CRC32C_TABLE = []
for _n in range(256):
    _c = _n
    for _ in range(8):
        _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1
    _CRC32C_TABLE.append(_c)


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    table = _CRC32C_TABLE
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


assert crc32c(b"123456789") == 0xE3069283  # the standard check value

# ---------------------------------------------------------------- primitives


def varint(n: int) -> bytes:
    """Zigzag varint (Kafka's signed varint / varlong)."""
    z = (n << 1) ^ (n >> 63)
    z &= 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    while True:
        b = z & 0x7F
        z >>= 7
        if z:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def uvarint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def string(s):
    if s is None:
        return struct.pack(">h", -1)
    b = s.encode() if isinstance(s, str) else s
    return struct.pack(">h", len(b)) + b


def compact_string(s):
    if s is None:
        return uvarint(0)
    b = s.encode() if isinstance(s, str) else s
    return uvarint(len(b) + 1) + b


def nbytes(b):
    if b is None:
        return struct.pack(">i", -1)
    return struct.pack(">i", len(b)) + b


class Reader:
    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def take(self, n):
        if self.pos + n > len(self.data):
            raise ValueError(f"response too short: need {n} bytes at {self.pos}, have {len(self.data)}")
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def int8(self):
        return struct.unpack(">b", self.take(1))[0]

    def int16(self):
        return struct.unpack(">h", self.take(2))[0]

    def int32(self):
        return struct.unpack(">i", self.take(4))[0]

    def int64(self):
        return struct.unpack(">q", self.take(8))[0]

    def string(self):
        n = self.int16()
        return None if n < 0 else self.take(n).decode()

    def compact_string(self):
        """A flexible version's (nullable) string."""
        n = self.uvarint() - 1
        return None if n < 0 else self.take(n).decode()

    def uvarint(self):
        """An unsigned varint (flexible versions' lengths and tag counts)."""
        shift = value = 0
        while True:
            b = self.take(1)[0]
            value |= (b & 0x7F) << shift
            if not b & 0x80:
                return value
            shift += 7

    def remaining(self):
        return len(self.data) - self.pos


# ---------------------------------------------------------------- record batches (magic v2)


def record(key, value, offset_delta=0, timestamp_delta=0, headers=()):
    body = bytearray()
    body += b"\x00"  # attributes
    body += varint(timestamp_delta)
    body += varint(offset_delta)
    if key is None:
        body += varint(-1)
    else:
        body += varint(len(key)) + key
    if value is None:
        body += varint(-1)
    else:
        body += varint(len(value)) + value
    body += varint(len(headers))
    for hk, hv in headers:
        hk = hk.encode()
        body += varint(len(hk)) + hk
        body += varint(-1) if hv is None else varint(len(hv)) + hv
    return varint(len(body)) + bytes(body)


def record_batch(records, base_timestamp=None, producer_id=-1, producer_epoch=-1,
                 base_sequence=-1, attributes=0, corrupt_crc=False, magic=2):
    """records: list of (key, value). Returns the batch bytes (base offset 0)."""
    if base_timestamp is None:
        base_timestamp = int(time.time() * 1000)
    recs = b"".join(record(k, v, offset_delta=i) for i, (k, v) in enumerate(records))
    after_crc = struct.pack(
        ">hiqqqhii",
        attributes,
        len(records) - 1,  # last offset delta
        base_timestamp,
        base_timestamp,  # max timestamp
        producer_id,
        producer_epoch,
        base_sequence,
        len(records),
    ) + recs
    crc = crc32c(after_crc)
    if corrupt_crc:
        crc ^= 0xDEADBEEF
    # partitionLeaderEpoch, magic, crc
    after_length = struct.pack(">ibI", -1, magic, crc) + after_crc
    return struct.pack(">qi", 0, len(after_length)) + after_length


BATCH_HEADER_BYTES = 61  # base offset .. records count, the 12-byte log overhead included


def batch_size_for_value(value_len: int) -> int:
    """Total bytes (with the 12-byte log overhead) of a one-record batch with a null key,
    no headers and a value of value_len bytes, as librdkafka and this module encode it
    (computed, not built: values near 1 MiB would make the pure-Python CRC slow)."""
    # attributes, timestamp delta 0, offset delta 0, key length -1, value length, value, header count
    body = 1 + 1 + 1 + 1 + len(varint(value_len)) + value_len + 1
    return BATCH_HEADER_BYTES + len(varint(body)) + body


def value_len_for_batch_size(total: int) -> int:
    """The value length whose one-record batch (see batch_size_for_value) is exactly `total` bytes."""
    v = total - BATCH_HEADER_BYTES
    while v > 0 and batch_size_for_value(v) > total:
        v -= 1
    assert batch_size_for_value(v) == total, f"no value length gives a batch of exactly {total} bytes"
    return v


assert batch_size_for_value(5) == len(record_batch([(None, b"x" * 5)]))
assert batch_size_for_value(300) == len(record_batch([(None, b"x" * 300)]))


# ---------------------------------------------------------------- connection


def await_coordinator(conn, group, deadline_s=20):
    """FindCoordinator v0 for `group` on `conn` until its coordinator is ready (error 0),
    as a client does before it talks to a group; raw group requests then go to it."""
    end = time.monotonic() + deadline_s
    while (err := conn.request(10, 0, string(group)).int16()) != 0:
        assert time.monotonic() < end, f"FindCoordinator({group}): error {err}"
        time.sleep(0.1)


def find_coordinator(bootstrap, group, deadline_s=20):
    """`await_coordinator` over a new plaintext connection to `bootstrap` (host:port)."""
    host, port = bootstrap.split(":")
    with Conn(host, int(port)) as c:
        await_coordinator(c, group, deadline_s)


class Conn:
    """A blocking connection that speaks request header v1 (non-flexible requests)."""

    def __init__(self, host, port, timeout=10.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.corr = 0

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def send_raw(self, data: bytes):
        self.sock.sendall(data)

    def recv_exact(self, n):
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError(f"connection closed after {len(buf)} of {n} bytes")
            buf += chunk
        return bytes(buf)

    def recv_frame(self) -> bytes:
        (size,) = struct.unpack(">i", self.recv_exact(4))
        assert 0 <= size <= 64 * 1024 * 1024, f"implausible response size {size}"
        return self.recv_exact(size)

    def request(self, api_key, api_version, body: bytes, header_version=1, client_id="runnel-tests"):
        self.corr += 1
        corr = self.corr
        header = struct.pack(">hhi", api_key, api_version, corr) + string(client_id)
        if header_version >= 2:
            header += uvarint(0)  # no tagged fields
        frame = header + body
        self.sock.sendall(struct.pack(">i", len(frame)) + frame)
        resp = self.recv_frame()
        r = Reader(resp)
        got = r.int32()
        assert got == corr, f"correlation id {got} != {corr}"
        return r

    def closed_by_peer(self, timeout=5.0) -> bool:
        """True if the peer closes (EOF or reset) within timeout; False if it stays open.
        Any bytes received before the close are returned via self.last_bytes."""
        self.sock.settimeout(timeout)
        self.last_bytes = b""
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.last_bytes += chunk
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False
        return False

    # ------------------------------------------------------------ requests

    def api_versions_v0(self):
        """-> (error_code, {api_key: (min, max)})"""
        r = self.request(API_VERSIONS, 0, b"")
        return parse_api_versions_v0(r)

    def init_producer_id(self, version=0):
        assert version in (0, 1)
        r = self.request(INIT_PRODUCER_ID, version, string(None) + struct.pack(">i", 60000))
        r.int32()  # throttle
        err = r.int16()
        pid = r.int64()
        epoch = r.int16()
        return err, pid, epoch

    def produce(self, topic, partition, batch: bytes, acks=-1, version=3, timeout_ms=10000,
                transactional_id=None):
        """Produce v3..v8 (non-flexible). -> (error_code, base_offset)"""
        assert 3 <= version <= 8
        body = string(transactional_id) + struct.pack(">hi", acks, timeout_ms)
        body += struct.pack(">i", 1) + string(topic)
        body += struct.pack(">i", 1) + struct.pack(">i", partition) + nbytes(batch)
        r = self.request(PRODUCE, version, body)
        ntopics = r.int32()
        assert ntopics == 1, ntopics
        name = r.string()
        assert name == topic, name
        nparts = r.int32()
        assert nparts == 1, nparts
        idx = r.int32()
        assert idx == partition
        err = r.int16()
        base_offset = r.int64()
        r.int64()  # log append time
        if version >= 5:
            r.int64()  # log start offset
        self.last_record_errors, self.last_error_message = [], None
        if version >= 8:
            nrec = r.int32()
            for _ in range(max(nrec, 0)):
                self.last_record_errors.append((r.int32(), r.string()))  # KIP-467
            self.last_error_message = r.string()
        return err, base_offset


    def produce_v8(self, topic, partition, batch: bytes, acks=-1, timeout_ms=10000):
        """Produce v8 (KIP-467). -> (error_code, base_offset, [(batch_index, message)],
        error_message)"""
        body = string(None) + struct.pack(">hi", acks, timeout_ms)
        body += struct.pack(">i", 1) + string(topic)
        body += struct.pack(">i", 1) + struct.pack(">i", partition) + nbytes(batch)
        r = self.request(PRODUCE, 8, body)
        assert r.int32() == 1
        assert r.string() == topic
        assert r.int32() == 1
        assert r.int32() == partition
        err = r.int16()
        base_offset = r.int64()
        r.int64()  # log append time
        r.int64()  # log start offset
        record_errors = [(r.int32(), r.string()) for _ in range(max(r.int32(), 0))]
        return err, base_offset, record_errors, r.string()

    def metadata_v1(self, topics):
        """Metadata v1 for `topics` -> ({broker id: (host, port)},
        {topic: (error_code, {partition: (error_code, leader)})})"""
        body = struct.pack(">i", len(topics)) + b"".join(string(t) for t in topics)
        r = self.request(METADATA, 1, body)
        brokers = {}
        for _ in range(r.int32()):
            node, host, port = r.int32(), r.string(), r.int32()
            r.string()  # rack
            brokers[node] = (host, port)
        r.int32()  # controller id
        out = {}
        for _ in range(r.int32()):
            err, name = r.int16(), r.string()
            r.int8()  # is_internal
            parts = {}
            for _ in range(r.int32()):
                perr, index, leader = r.int16(), r.int32(), r.int32()
                for _ in range(2):  # replicas, isr
                    r.take(4 * r.int32())
                parts[index] = (perr, leader)
            out[name] = (err, parts)
        return brokers, out

    def fetch_v11(self, topic, partition, offset, rack="", max_wait_ms=0, leader_epoch=-1):
        """Fetch v11 (KIP-392), sessionless, one partition. -> dict with error,
        high_watermark, preferred_read_replica, and batches [(base_offset, record_count)]."""
        body = struct.pack(">iiiib", -1, max_wait_ms, 1, 1 << 20, 0)
        body += struct.pack(">ii", 0, -1)  # no session
        body += struct.pack(">i", 1) + string(topic)
        body += struct.pack(">i", 1) + struct.pack(">iiqqi", partition, leader_epoch, offset, -1, 1 << 20)
        body += struct.pack(">i", 0)  # forgotten topics
        body += string(rack)
        r = self.request(FETCH, 11, body)
        throttle_time_ms = r.int32()
        top_error = r.int16()
        r.int32()  # session id
        assert r.int32() == 1
        assert r.string() == topic
        assert r.int32() == 1
        assert r.int32() == partition
        out = {"top_error": top_error, "error": r.int16(), "high_watermark": r.int64(),
               "throttle_time_ms": throttle_time_ms}
        r.int64()  # last stable offset
        r.int64()  # log start offset
        for _ in range(max(r.int32(), 0)):  # aborted transactions
            r.int64()
            r.int64()
        out["preferred_read_replica"] = r.int32()
        n = r.int32()
        records = r.take(n) if n > 0 else b""
        batches = []
        pos = 0
        while pos + 61 <= len(records):
            base, length = struct.unpack(">qi", records[pos:pos + 12])
            (count,) = struct.unpack(">i", records[pos + 57:pos + 61])
            batches.append((base, count))
            pos += 12 + length
        out["batches"] = batches
        return out


def parse_api_versions_v0(r: Reader):
    err = r.int16()
    n = r.int32()
    assert 0 <= n < 1000, f"implausible api count {n}"
    apis = {}
    for _ in range(n):
        k, lo, hi = r.int16(), r.int16(), r.int16()
        apis[k] = (lo, hi)
    return err, apis


def pick_version(apis, key, lo, hi):
    """Highest version of `key` in [lo, hi] that the broker advertises, or None."""
    if key not in apis:
        return None
    blo, bhi = apis[key]
    v = min(hi, bhi)
    return v if v >= max(lo, blo) else None
