"""Raw-socket tests: malformed frames, version negotiation, and idempotent-producer
sequence rules that well-behaved clients never exercise on purpose."""

import random
import socket
import struct
import time

import pytest

import ck
import kwire
from harness import unique


def assert_serving(broker, still_open=None):
    """The broker answers a new connection, and an older open one, normally."""
    with kwire.Conn(*broker.address) as c:
        err, apis = c.api_versions_v0()
        assert err == 0 and kwire.API_VERSIONS in apis
    if still_open is not None:
        err, apis = still_open.api_versions_v0()
        assert err == 0 and kwire.API_VERSIONS in apis
    assert broker.alive(), "broker process died\n" + broker.log_tail()


def closed_or_error(conn, corr=None, timeout=5.0):
    """The broker either closes the connection or answers with an error; it must not
    leave the client hanging with no answer."""
    closed = conn.closed_by_peer(timeout)
    if closed:
        return "closed"
    data = conn.last_bytes
    assert len(data) >= 10, f"connection neither closed nor answered within {timeout}s (got {data!r})"
    return "answered"


def header(api_key, version, corr=1, client_id=b"runnel-tests"):
    return struct.pack(">hhi", api_key, version, corr) + struct.pack(">h", len(client_id)) + client_id


def frame(payload):
    return struct.pack(">i", len(payload)) + payload


def test_api_versions_v0_lists_what_clients_need(broker):
    with kwire.Conn(*broker.address) as c:
        err, apis = c.api_versions_v0()
    assert err == 0
    for key in (kwire.PRODUCE, kwire.FETCH, kwire.LIST_OFFSETS, kwire.METADATA, kwire.API_VERSIONS,
                kwire.INIT_PRODUCER_ID, 19, 20, 23):  # CreateTopics, DeleteTopics, OffsetForLeaderEpoch
        assert key in apis, f"api key {key} not advertised: {sorted(apis)}"
        lo, hi = apis[key]
        assert 0 <= lo <= hi
    assert apis[kwire.API_VERSIONS][1] >= 3  # librdkafka and kafka-python start at v3


def test_api_versions_too_high_gets_unsupported_version_with_v0_list(broker):
    with kwire.Conn(*broker.address) as c:
        # A future client: ApiVersions v127 with a flexible (v2) request header and a v3-shaped body.
        body = kwire.compact_string("future-client") + kwire.compact_string("9.9") + kwire.uvarint(0)
        r = c.request(kwire.API_VERSIONS, 127, body, header_version=2)
        # Kafka answers in a v0 body (response header v0) so any client can read it.
        err, apis = kwire.parse_api_versions_v0(r)
        assert err == kwire.UNSUPPORTED_VERSION
        assert kwire.API_VERSIONS in apis and apis[kwire.API_VERSIONS][0] == 0
        assert kwire.PRODUCE in apis
        # The connection stays usable: the client now retries with a version it knows.
        err, _ = c.api_versions_v0()
        assert err == 0
    assert_serving(broker)


def test_garbage_frame(broker):
    with kwire.Conn(*broker.address) as keep:
        keep.api_versions_v0()
        rnd = random.Random(42)
        with kwire.Conn(*broker.address) as c:
            c.send_raw(frame(bytes(rnd.getrandbits(8) for _ in range(64))))
            closed_or_error(c)
        # A valid header followed by a body of garbage (Metadata v9, flexible).
        with kwire.Conn(*broker.address) as c:
            c.send_raw(frame(header(kwire.METADATA, 9) + b"\x00" + bytes(rnd.getrandbits(8) for _ in range(40))))
            closed_or_error(c)
        # Many random frames on fresh connections: none may take the broker down.
        for i in range(100):
            with kwire.Conn(*broker.address) as c:
                key = rnd.choice([0, 1, 2, 3, 18, 19, 20, 22, 23, rnd.randrange(-5, 100)])
                payload = header(key, rnd.randrange(0, 15), i) + bytes(rnd.getrandbits(8) for _ in range(rnd.randrange(0, 80)))
                c.send_raw(frame(payload))
                c.sock.shutdown(socket.SHUT_WR)
                closed_or_error(c)
        assert_serving(broker, still_open=keep)


@pytest.mark.parametrize("case", ["short-header", "half-frame", "size-only"])
def test_truncated_frame(broker, case):
    with kwire.Conn(*broker.address) as keep:
        keep.api_versions_v0()
        with kwire.Conn(*broker.address) as c:
            if case == "short-header":
                # The frame is complete but ends inside the request header (client id length 50, no bytes).
                c.send_raw(frame(struct.pack(">hhih", kwire.METADATA, 1, 7, 50)))
            elif case == "half-frame":
                # The size promises 100 bytes; 10 arrive, then the client half-closes.
                c.send_raw(struct.pack(">i", 100) + header(kwire.METADATA, 1)[:10])
                c.sock.shutdown(socket.SHUT_WR)
            else:
                c.send_raw(struct.pack(">h", 0))  # half of the size field
                c.sock.shutdown(socket.SHUT_WR)
            assert closed_or_error(c) == "closed" or case == "short-header"
        assert_serving(broker, still_open=keep)


@pytest.mark.parametrize("size", [104857600 + 1, 0x7FFFFFFF, -1, -0x80000000])
def test_oversized_or_negative_frame_size(broker, size):
    with kwire.Conn(*broker.address) as keep:
        keep.api_versions_v0()
        with kwire.Conn(*broker.address) as c:
            t0 = time.monotonic()
            c.send_raw(struct.pack(">i", size) + header(kwire.METADATA, 1))
            # The broker must close at once, without waiting for (or allocating) the body.
            assert c.closed_by_peer(5.0), f"frame size {size} did not close the connection"
            assert time.monotonic() - t0 < 5.0
        assert_serving(broker, still_open=keep)


def test_frame_over_a_lowered_socket_request_max_bytes(start_broker):
    b = start_broker(socket__request__max__bytes=4096)
    with kwire.Conn(*b.address) as c:
        err, _ = c.api_versions_v0()  # small requests still work
        assert err == 0
    with kwire.Conn(*b.address) as c:
        c.send_raw(struct.pack(">i", 4097) + header(kwire.METADATA, 1))
        assert c.closed_by_peer(5.0)
    assert_serving(b)


@pytest.mark.parametrize("api_key,version", [(999, 0), (-1, 0), (kwire.METADATA, 999), (kwire.PRODUCE, 100)])
def test_unknown_api_key_or_unsupported_version(broker, api_key, version):
    """Unknown keys and versions outside the advertised range are closed or answered
    with an error; either way no other client notices."""
    with kwire.Conn(*broker.address) as keep:
        _, apis = keep.api_versions_v0()
        if api_key in apis:
            lo, hi = apis[api_key]
            assert not (lo <= version <= hi), "pick a version the broker does not advertise"
        with kwire.Conn(*broker.address) as c:
            c.send_raw(frame(header(api_key, version, 77) + b"\x00" * 16))
            how = closed_or_error(c)
            if how == "answered":
                data = c.last_bytes
                size, corr = struct.unpack(">ii", data[:8])
                assert corr == 77
        assert_serving(broker, still_open=keep)


def test_many_connections_opened_and_dropped(broker):
    socks = []
    try:
        for _ in range(200):
            socks.append(socket.create_connection(broker.address, timeout=5))
        for s in socks[::2]:
            s.close()
        assert_serving(broker)
    finally:
        for s in socks:
            s.close()


# ---------------------------------------------------------------- produce validation


@pytest.fixture
def raw_producer(broker):
    topic = ck.create_topic(broker, unique("raw"))
    c = kwire.Conn(*broker.address)
    err, apis = c.api_versions_v0()
    assert err == 0
    pv = kwire.pick_version(apis, kwire.PRODUCE, 3, 8)
    iv = kwire.pick_version(apis, kwire.INIT_PRODUCER_ID, 0, 1)
    assert pv is not None and iv is not None, f"Produce v3-8 / InitProducerId v0-1 not advertised: {apis}"
    try:
        yield topic, c, pv, iv
    finally:
        c.close()


def test_idempotent_duplicates_and_gaps(broker, raw_producer):
    topic, c, pv, iv = raw_producer
    err, pid, epoch = c.init_producer_id(iv)
    assert err == 0 and pid >= 0 and epoch >= 0

    def batch(seq, n=2, tag="a"):
        return kwire.record_batch([(None, f"{tag}{seq + i}".encode()) for i in range(n)],
                                  producer_id=pid, producer_epoch=epoch, base_sequence=seq)
    b0 = batch(0)
    assert c.produce(topic, 0, b0, version=pv) == (0, 0)
    assert c.produce(topic, 0, batch(2), version=pv) == (0, 2)
    # A retried batch (same pid, epoch, sequence) is a duplicate: not written again.
    err, base = c.produce(topic, 0, b0, version=pv)
    assert err in (kwire.NONE, kwire.DUPLICATE_SEQUENCE_NUMBER), err
    if err == kwire.NONE:
        assert base == 0, f"duplicate answered with base offset {base}, Kafka answers the original's (0)"
    # A gap in sequence numbers is refused.
    assert c.produce(topic, 0, batch(9), version=pv)[0] == kwire.OUT_OF_ORDER_SEQUENCE_NUMBER
    # The next in-sequence batch is fine.
    assert c.produce(topic, 0, batch(4), version=pv) == (0, 4)
    assert ck.watermarks(broker, topic) == (0, 6)
    assert [m.value() for m in ck.consume(broker, topic)] == [f"a{i}".encode() for i in range(6)]


def test_corrupt_crc_refused_and_not_stored(broker, raw_producer):
    topic, c, pv, _ = raw_producer
    assert c.produce(topic, 0, kwire.record_batch([(b"k", b"good")]), version=pv) == (0, 0)
    err, _ = c.produce(topic, 0, kwire.record_batch([(b"k", b"bad")], corrupt_crc=True), version=pv)
    assert err == kwire.CORRUPT_MESSAGE, err
    # A batch whose record count disagrees with its bytes.
    good = bytearray(kwire.record_batch([(b"k", b"x")]))
    struct.pack_into(">i", good, 57, 5)  # records count field
    crc = kwire.crc32c(bytes(good[21:]))
    struct.pack_into(">I", good, 17, crc)
    err, _ = c.produce(topic, 0, bytes(good), version=pv)
    assert err in (kwire.CORRUPT_MESSAGE, kwire.INVALID_RECORD), err  # Kafka: INVALID_RECORD
    # Magic v1 (a pre-0.11 message set) is refused: Runnel stores magic v2 only.
    err, _ = c.produce(topic, 0, kwire.record_batch([(b"k", b"old")], magic=1), version=pv)
    assert err != kwire.NONE
    # An unknown compression codec (attributes & 7 == 5).
    err, _ = c.produce(topic, 0, kwire.record_batch([(b"k", b"codec")], attributes=5), version=pv)
    assert err != kwire.NONE
    assert c.produce(topic, 0, kwire.record_batch([(b"k", b"good2")]), version=pv) == (0, 1)
    assert ck.watermarks(broker, topic) == (0, 2)
    assert [m.value() for m in ck.consume(broker, topic)] == [b"good", b"good2"]


def test_produce_to_unknown_partition(broker, raw_producer):
    topic, c, pv, _ = raw_producer
    err, _ = c.produce(topic, 5, kwire.record_batch([(None, b"x")]), version=pv)
    assert err == 3  # UNKNOWN_TOPIC_OR_PARTITION
