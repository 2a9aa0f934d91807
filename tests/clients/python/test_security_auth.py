"""Authentication as Kafka users configure it: TLS (SSL listeners, mTLS with the
principal from the certificate's DN), SASL PLAIN from JAAS users, SCRAM-SHA-256/512
with credentials created through AlterUserScramCredentials, on SASL_PLAINTEXT and
SASL_SSL, through librdkafka (confluent-kafka), kafka-python and the runnel CLI; and the
bad inputs (wrong password, unknown user, wrong protocol on a port, garbage tokens,
requests before authentication) refused while the broker keeps serving others.

Certificates are throwaway ones made with the openssl CLI at test time.
"""

import base64
import json
import os
import re
import socket
import ssl
import struct
import subprocess
import time
import urllib.request

import pytest
from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import (AdminClient, NewTopic, ScramCredentialInfo, ScramMechanism,
                                   UserScramCredentialUpsertion)

import ck
import kwire
from cluster import Cluster, free_ports
from harness import runnel_bin, unique
from test_http import HttpBroker

SASL_HANDSHAKE = 17
SASL_AUTHENTICATE = 36
METADATA = 3
PLAIN_USERS = {"admin": "admin-secret", "alice": "alice-secret"}
JAAS = ("org.apache.kafka.common.security.plain.PlainLoginModule required "
        'username="admin" password="admin-secret" '
        + " ".join(f'user_{u}="{p}"' for u, p in PLAIN_USERS.items()) + ";")
GENERIC_FAILURE = "Authentication failed during authentication due to invalid credentials"


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def make_certs(d):
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate for
    CN=alice,OU=eng,O=acme; keystores as Kafka's PEM type wants them (key + chain)."""
    d = str(d)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=runnel-test-ca", cwd=d)
    for name, subj, ext in (
        ("server", "/CN=localhost",
         "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n"),
        ("alice", "/O=acme/OU=eng/CN=alice", "extendedKeyUsage=clientAuth\n"),
    ):
        with open(os.path.join(d, f"{name}.ext"), "w") as f:
            f.write("basicConstraints=CA:FALSE\n" + ext)
        openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subj, cwd=d)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext",
                cwd=d)
        with open(os.path.join(d, f"{name}-keystore.pem"), "w") as out:
            for part in (f"{name}.key", f"{name}.pem"):
                out.write(open(os.path.join(d, part)).read())
    return {k: os.path.join(d, f) for k, f in
            (("ca", "ca.pem"), ("server", "server-keystore.pem"), ("cert", "alice.pem"),
             ("key", "alice.key"))}


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_jwks(d):
    """An RSA key, a JWKS file holding its public half (kid k1), and a second key that
    is not in the JWKS."""
    d = str(d)
    for name in ("jwt", "rogue"):
        openssl("genrsa", "-out", f"{name}.key", "2048", cwd=d)
    out = subprocess.run(["openssl", "rsa", "-in", "jwt.key", "-noout", "-modulus"], cwd=d,
                         capture_output=True, text=True, check=True).stdout
    n = bytes.fromhex(out.strip().split("=", 1)[1])
    path = os.path.join(d, "jwks.json")
    with open(path, "w") as f:
        json.dump({"keys": [{"kty": "RSA", "kid": "k1", "alg": "RS256", "use": "sig",
                             "n": b64url(n), "e": "AQAB"}]}, f)
    return {"path": path, "key": os.path.join(d, "jwt.key"), "rogue": os.path.join(d, "rogue.key")}


def signed_jwt(key, claims, kid="k1"):
    header = b64url(json.dumps({"alg": "RS256", "typ": "JWT", "kid": kid}).encode())
    payload = b64url(json.dumps(claims).encode())
    signing_input = f"{header}.{payload}".encode()
    sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", key], input=signing_input,
                         capture_output=True, check=True).stdout
    return f"{header}.{payload}.{b64url(sig)}"


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    """One broker with a listener per protocol (and an mTLS one)."""
    d = tmp_path_factory.mktemp("secured")
    certs = make_certs(d)
    names = ["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL", "MTLS", "OAUTH", "OAUTHJWKS"]
    jwks = make_jwks(d)
    ports = dict(zip(names, free_ports(len(names))))
    configs = {
        "listeners": ",".join(f"{n}://127.0.0.1:{p}" for n, p in ports.items()),
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_PLAINTEXT:SASL_PLAINTEXT,"
                                          "SASL_SSL:SASL_SSL,MTLS:SSL,OAUTH:SASL_PLAINTEXT,"
                                          "OAUTHJWKS:SASL_PLAINTEXT",
        # OAUTHBEARER: unsecured JWTs on OAUTH, JWKS-signed ones on OAUTHJWKS.
        "listener.name.oauth.sasl.enabled.mechanisms": "OAUTHBEARER",
        "listener.name.oauthjwks.sasl.enabled.mechanisms": "OAUTHBEARER",
        "listener.name.oauthjwks.oauthbearer.sasl.server.callback.handler.class":
            "org.apache.kafka.common.security.oauthbearer.OAuthBearerValidatorCallbackHandler",
        "sasl.oauthbearer.jwks.endpoint.url": "file://" + jwks["path"],
        "sasl.oauthbearer.expected.audience": "runnel",
        "sasl.oauthbearer.expected.issuer": "runnel-test",
        "inter.broker.listener.name": "PLAINTEXT",
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": certs["server"],
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": certs["ca"],
        "listener.name.mtls.ssl.client.auth": "required",
        "sasl.enabled.mechanisms": "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512",
        "sasl.jaas.config": JAAS,
        "sasl.mechanism.inter.broker.protocol": "PLAIN",
        # KIP-368 on one listener: sessions of 2.5 s, then re-authenticate or be closed.
        "listener.name.sasl_plaintext.connections.max.reauth.ms": "2500",
        # A TLS handshake (or a frame) must finish within 3 s.
        "request.read.timeout.ms": "3000",
    }

    b = HttpBroker(d / "broker", configs, name="secured")
    b.start()
    b.ports, b.certs, b.jwks = ports, certs, jwks
    try:
        yield b
    finally:
        problems = b.stop()
    assert not problems, problems


def conf(b, listener, **extra):
    c = {"bootstrap.servers": f"127.0.0.1:{b.ports[listener]}", **ck.QUIET}
    protocol = {"MTLS": "SSL"}.get(listener, listener)
    c["security.protocol"] = protocol
    if "SSL" in protocol:
        c["ssl.ca.location"] = b.certs["ca"]
    c.update({k.replace("_", "."): v for k, v in extra.items()})
    return c


def roundtrip(c, topic, value):
    """Produces one record with config c and reads it back with the same config."""
    p = Producer({**c, "linger.ms": 0})
    p.produce(topic, value)
    assert p.flush(20) == 0, "record not delivered"
    cons = Consumer({**c, "group.id": unique("g"), "auto.offset.reset": "earliest",
                     "enable.auto.commit": False})
    try:
        cons.subscribe([topic])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            m = cons.poll(0.5)
            if m is None or m.error():
                continue
            if m.value() == value:
                return
        raise AssertionError(f"{value!r} not read back from {topic}")
    finally:
        cons.close()


def create_scram_user(b, user, password, mechanism, iterations=4096):
    a = AdminClient({"bootstrap.servers": f"127.0.0.1:{b.ports['PLAINTEXT']}", **ck.QUIET})
    up = UserScramCredentialUpsertion(user, ScramCredentialInfo(mechanism, iterations),
                                      password.encode())
    for f in a.alter_user_scram_credentials([up]).values():
        f.result(timeout=20)
    return a


def log_text(b):
    return "".join(open(p, errors="replace").read() for p in b.log_files())


def metrics(b):
    return urllib.request.urlopen(b.url("/metrics"), timeout=10).read().decode()


@pytest.mark.timeout_s(120)
def test_tls_and_mtls_with_the_principal_from_the_certificate(secured):
    topic = ck.create_topic(ck_broker(secured), unique("tls"))
    roundtrip(conf(secured, "SSL"), topic, b"over-tls")
    roundtrip(conf(secured, "MTLS", ssl_certificate_location=secured.certs["cert"],
                   ssl_key_location=secured.certs["key"]), topic, b"over-mtls")
    # Kafka's DEFAULT mapping: the subject DN as Java prints it.
    assert "principal=User:CN=alice,OU=eng,O=acme" in log_text(secured)
    # Without a client certificate the mTLS listener refuses the handshake.
    reports = []
    p = Producer({**conf(secured, "MTLS"), "message.timeout.ms": 3000, "log_level": 0})
    p.produce(topic, b"no-cert", on_delivery=lambda err, msg: reports.append(err))
    p.flush(10)
    assert len(reports) == 1 and reports[0] is not None, \
        f"a client without a certificate got through ssl.client.auth=required: {reports}"
    del p
    assert re.search(r'runnel_authentication_failures_total\{listener="MTLS",mechanism="SSL"\} \d+',
                     metrics(secured))


@pytest.mark.timeout_s(120)
def test_large_fetches_are_byte_exact_over_plaintext_sasl_and_tls(secured):
    """Fetch responses carry several partitions' record sets from the segment files:
    sendfile on PLAINTEXT and SASL_PLAINTEXT, a bounded copy (256 KiB at a time) on TLS.
    Every record comes back byte for byte, in order, on each, with responses of several
    MiB (more than one copy chunk per partition)."""
    topic = ck.create_topic(ck_broker(secured), unique("bigfetch"), partitions=3)
    sent = {0: [], 1: [], 2: []}
    p = Producer({**conf(secured, "PLAINTEXT"), "linger.ms": 5, "batch.size": 512 << 10,
                  "message.max.bytes": 4 << 20})
    for i in range(300):
        part = i % 3
        # Distinct, incompressible-looking values of 5-20 KiB.
        value = os.urandom(5000 + (i * 7919) % 15000)
        sent[part].append(value)
        p.produce(topic, value, partition=part)
    assert p.flush(30) == 0, "records not delivered"
    for listener, extra in [("PLAINTEXT", {}), ("SSL", {}),
                            ("SASL_PLAINTEXT", {"sasl_mechanism": "PLAIN", "sasl_username": "alice",
                                                "sasl_password": "alice-secret"})]:
        cons = Consumer({**conf(secured, listener, **extra), "group.id": unique("g"),
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "fetch.max.bytes": 8 << 20, "max.partition.fetch.bytes": 4 << 20})
        got = {0: [], 1: [], 2: []}
        try:
            cons.subscribe([topic])
            deadline = time.monotonic() + 60
            while sum(map(len, got.values())) < 300 and time.monotonic() < deadline:
                for m in cons.consume(500, 0.5):
                    assert not m.error(), (listener, m.error())
                    got[m.partition()].append(m.value())
        finally:
            cons.close()
        for part in sent:
            assert got[part] == sent[part], \
                f"{listener}: partition {part} read {len(got[part])} records, " \
                f"{sum(a == b for a, b in zip(got[part], sent[part]))} equal to the {len(sent[part])} sent"


def ck_broker(b):
    """An object ck's helpers accept, pointing at the PLAINTEXT listener."""
    class P:
        bootstrap = f"127.0.0.1:{b.ports['PLAINTEXT']}"
    return P()


@pytest.mark.timeout_s(120)
@pytest.mark.parametrize("listener", ["SASL_PLAINTEXT", "SASL_SSL"])
def test_sasl_plain(secured, listener):
    topic = ck.create_topic(ck_broker(secured), unique("plain"))
    roundtrip(conf(secured, listener, sasl_mechanism="PLAIN", sasl_username="alice",
                   sasl_password="alice-secret"), topic, b"plain-" + listener.encode())
    assert re.search(rf'runnel_authentication_successes_total\{{listener="{listener}",'
                     rf'mechanism="PLAIN"\}} [1-9]', metrics(secured))


@pytest.mark.timeout_s(120)
@pytest.mark.parametrize("mechanism", [ScramMechanism.SCRAM_SHA_256, ScramMechanism.SCRAM_SHA_512])
def test_scram_users_created_through_the_admin_api(secured, mechanism):
    name = "SCRAM-SHA-256" if mechanism == ScramMechanism.SCRAM_SHA_256 else "SCRAM-SHA-512"
    user = unique("u")
    a = create_scram_user(secured, user, "s3cret", mechanism, iterations=8192)
    described = a.describe_user_scram_credentials([user])
    if isinstance(described, dict):
        desc = described[user].result(timeout=10)
    else:
        desc = described.result(timeout=10)[user]
    infos = [(i.mechanism, i.iterations) for i in desc.scram_credential_infos]
    assert infos == [(mechanism, 8192)], infos
    topic = ck.create_topic(ck_broker(secured), unique("scram"))
    for listener in ("SASL_PLAINTEXT", "SASL_SSL"):
        roundtrip(conf(secured, listener, sasl_mechanism=name, sasl_username=user,
                       sasl_password="s3cret"), topic, f"{name}-{listener}".encode())
    # Stored salted (in the metadata log), never as the password.
    meta = os.path.join(secured.data_dir, "__cluster_metadata")
    stored = b""
    for root, _, files in os.walk(meta):
        for f in files:
            stored += open(os.path.join(root, f), "rb").read()
    assert user.encode() in stored and b"s3cret" not in stored


@pytest.mark.timeout_s(60)
def test_scram_iterations_below_kafkas_minimum_are_refused(secured):
    a = AdminClient({"bootstrap.servers": f"127.0.0.1:{secured.ports['PLAINTEXT']}", **ck.QUIET})
    up = UserScramCredentialUpsertion(unique("u"), ScramCredentialInfo(
        ScramMechanism.SCRAM_SHA_256, 1000), b"pw")
    with pytest.raises(KafkaException) as e:
        for f in a.alter_user_scram_credentials([up]).values():
            f.result(timeout=20)
    assert "UNACCEPTABLE_CREDENTIAL" in str(e.value) or "iterations" in str(e.value), e.value


def sasl_plain_raw(port, user, password, handshake_version=1):
    """SaslHandshake + SaslAuthenticate v1 for PLAIN -> (error code, message)."""
    with kwire.Conn("127.0.0.1", port) as c:
        r = c.request(SASL_HANDSHAKE, handshake_version, kwire.string("PLAIN"))
        assert r.int16() == 0
        token = b"\0" + user.encode() + b"\0" + password.encode()
        r = c.request(SASL_AUTHENTICATE, 1, kwire.nbytes(token))
        code = r.int16()
        message = r.string()
        closed = c.closed_by_peer(3) if code else None
        return code, message, closed


def still_serving(b):
    with kwire.Conn("127.0.0.1", b.ports["PLAINTEXT"]) as c:
        err, apis = c.api_versions_v0()
        assert err == 0 and SASL_HANDSHAKE in apis
    assert sasl_plain_raw(b.ports["SASL_PLAINTEXT"], "alice", "alice-secret")[0] == 0


@pytest.mark.timeout_s(120)
def test_bad_credentials_are_refused_alike_and_logged(secured):
    port = secured.ports["SASL_PLAINTEXT"]
    wrong = sasl_plain_raw(port, "alice", "nope")
    unknown = sasl_plain_raw(port, "mallory", "nope")
    # SASL_AUTHENTICATION_FAILED, one message whether or not the user exists; closed.
    assert wrong == unknown == (58, f"{GENERIC_FAILURE} with SASL mechanism PLAIN", True), (wrong, unknown)
    # librdkafka sees the failure as an authentication error.
    errors = []
    p = Producer({**conf(secured, "SASL_SSL", sasl_mechanism="SCRAM-SHA-256",
                         sasl_username="nobody", sasl_password="x"),
                  "error_cb": errors.append})
    p.poll(5)
    assert any("uthenticat" in str(e) for e in errors), errors
    log = log_text(secured)
    assert re.search(r"authentication failed.*listener=SASL_PLAINTEXT.*mechanism=\"?PLAIN", log), log[-2000:]
    assert "nope" not in log
    still_serving(secured)


@pytest.mark.timeout_s(120)
def test_protocol_mismatches_and_malformed_exchanges_are_refused(secured):
    # A plaintext Kafka client on a TLS port: closed, nothing answered.
    with kwire.Conn("127.0.0.1", secured.ports["SSL"]) as c:
        c.send_raw(struct.pack(">ihhi", 10, 18, 0, 1) + kwire.string("x"))
        assert c.closed_by_peer(15)
        assert not c.last_bytes.startswith(b"\x00\x00")
    # A TLS client on the plain port: the handshake fails, the connection closes.
    ctx = ssl.create_default_context(cafile=secured.certs["ca"])
    with socket.create_connection(("127.0.0.1", secured.ports["PLAINTEXT"]), timeout=10) as s:
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            ctx.wrap_socket(s, server_hostname="localhost")
    # A request before authentication on a SASL listener: closed (Kafka's rule).
    with kwire.Conn("127.0.0.1", secured.ports["SASL_PLAINTEXT"]) as c:
        c.send_raw(struct.pack(">ihhi", 10 + 4, METADATA, 1, 1) + kwire.string("x") + struct.pack(">i", -1))
        assert c.closed_by_peer(10) and c.last_bytes == b""
    # An unknown mechanism: UNSUPPORTED_SASL_MECHANISM with the enabled ones, then closed.
    with kwire.Conn("127.0.0.1", secured.ports["SASL_PLAINTEXT"]) as c:
        r = c.request(SASL_HANDSHAKE, 1, kwire.string("GSSAPI"))
        assert r.int16() == 33
        assert [r.string() for _ in range(r.int32())] == ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
        assert c.closed_by_peer(5)
    # SaslAuthenticate before SaslHandshake: ILLEGAL_SASL_STATE.
    with kwire.Conn("127.0.0.1", secured.ports["SASL_PLAINTEXT"]) as c:
        r = c.request(SASL_AUTHENTICATE, 1, kwire.nbytes(b"x"))
        assert r.int16() == 34
    # Garbage SCRAM tokens: SASL_AUTHENTICATION_FAILED, closed.
    for garbage in (b"\xff\xfe\x00garbage", b"n,,n=alice", b"p=tls-unique,,n=a,r=b", b""):
        with kwire.Conn("127.0.0.1", secured.ports["SASL_PLAINTEXT"]) as c:
            assert c.request(SASL_HANDSHAKE, 1, kwire.string("SCRAM-SHA-512")).int16() == 0
            r = c.request(SASL_AUTHENTICATE, 1, kwire.nbytes(garbage))
            assert r.int16() == 58, garbage
            assert c.closed_by_peer(5)
    # A v0 handshake, then raw tokens (no Kafka header), as old clients do.
    with kwire.Conn("127.0.0.1", secured.ports["SASL_PLAINTEXT"]) as c:
        assert c.request(SASL_HANDSHAKE, 0, kwire.string("PLAIN")).int16() == 0
        c.send_raw(kwire.nbytes(b"\0alice\0alice-secret"))
        assert c.recv_frame() == b""
        err, _ = c.api_versions_v0()
        assert err == 0
    # A client that opens a TLS port and sends nothing is closed within
    # request.read.timeout.ms (3 s here), and others are served meanwhile.
    idle = socket.create_connection(("127.0.0.1", secured.ports["SSL"]), timeout=15)
    opened = time.monotonic()
    still_serving(secured)
    try:
        assert idle.recv(1) == b""
    except ConnectionResetError:
        pass
    assert time.monotonic() - opened < 10
    idle.close()
    # The broker may write its log line a moment after it closed the socket.
    deadline = time.monotonic() + 10
    while "no TLS handshake within 3000 ms" not in log_text(secured):
        assert time.monotonic() < deadline, "no 'no TLS handshake within 3000 ms' line in the log"
        time.sleep(0.1)
    # After authentication a second handshake is ILLEGAL_SASL_STATE (KafkaApis).
    with kwire.Conn("127.0.0.1", secured.ports["PLAINTEXT"]) as c:
        assert c.request(SASL_HANDSHAKE, 1, kwire.string("PLAIN")).int16() == 34
    still_serving(secured)


@pytest.mark.timeout_s(120)
def test_kafka_python_over_sasl_ssl_with_scram(secured):
    kafka = pytest.importorskip("kafka")
    user = unique("kp")
    create_scram_user(secured, user, "kp-secret", ScramMechanism.SCRAM_SHA_512)
    topic = ck.create_topic(ck_broker(secured), unique("kp"))
    common = dict(bootstrap_servers=f"127.0.0.1:{secured.ports['SASL_SSL']}",
                  security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
                  sasl_plain_username=user, sasl_plain_password="kp-secret",
                  ssl_cafile=secured.certs["ca"], request_timeout_ms=20000)
    p = kafka.KafkaProducer(**common)
    p.send(topic, b"from-kafka-python").get(timeout=20)
    p.close()
    c = kafka.KafkaConsumer(topic, auto_offset_reset="earliest", consumer_timeout_ms=15000,
                            group_id=None, **common)
    try:
        assert b"from-kafka-python" in [m.value for m in c]
    finally:
        c.close()


@pytest.mark.timeout_s(120)
def test_cli_command_config_speaks_sasl_ssl(secured, tmp_path):
    user = unique("cli")
    create_scram_user(secured, user, "cli-secret", ScramMechanism.SCRAM_SHA_256)
    topic = ck.create_topic(ck_broker(secured), unique("cli"))
    java = tmp_path / "java.properties"
    java.write_text(
        f"bootstrap.servers=127.0.0.1:{secured.ports['SASL_SSL']}\n"
        "security.protocol=SASL_SSL\n"
        f"ssl.truststore.type=PEM\nssl.truststore.location={secured.certs['ca']}\n"
        "sasl.mechanism=SCRAM-SHA-256\n"
        "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="{user}" password="cli-secret";\n')
    r = subprocess.run([runnel_bin(), "topics", "list", "--command-config", str(java)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and topic in r.stdout.split(), r.stderr
    # librdkafka spellings, PLAIN over SASL_PLAINTEXT; and a wrong password fails.
    for password, ok in (("alice-secret", True), ("wrong", False)):
        r = subprocess.run([runnel_bin(), "topics", "list", "-b",
                            f"127.0.0.1:{secured.ports['SASL_PLAINTEXT']}",
                            "-X", "security.protocol=SASL_PLAINTEXT", "-X", "sasl.mechanisms=PLAIN",
                            "-X", "sasl.username=alice", "-X", f"sasl.password={password}",
                            "--timeout", "10"],
                           capture_output=True, text=True, timeout=60)
        assert (r.returncode == 0) == ok, r.stderr
        if not ok:
            assert "SASL_AUTHENTICATION_FAILED" in r.stderr or "uthenticat" in r.stderr, r.stderr


def replicated_topic_with_values(c, topic, n):
    """Creates `topic` (1 partition, RF 3) on cluster `c`, waits for an ISR of three and
    produces v0..v{n-1} with acks=all; returns the AdminClient used."""
    admin = AdminClient({"bootstrap.servers": c.bootstrap, **ck.QUIET})
    admin.create_topics([NewTopic(topic, 1, 3)])[topic].result(timeout=30)
    c.wait_for("ISR of three", lambda: len(c.partition_state(topic)[2]) == 3, timeout=60)
    p = Producer({"bootstrap.servers": c.bootstrap, "acks": "all", **ck.QUIET})
    for i in range(n):
        p.produce(topic, f"v{i}".encode())
    assert p.flush(30) == 0
    return admin


@pytest.mark.timeout_s(240)
def test_three_nodes_replicate_over_a_sasl_ssl_inter_broker_listener(tmp_path):
    """Followers fetch and the controller's brokers talk over REPLICATION (SASL_SSL, PLAIN
    with the broker's own JAAS username/password); acks=all needs the followers, so
    reading back what acks=all acknowledged, through a leader kill, proves it works."""
    certs = make_certs(tmp_path)
    jaas = ("org.apache.kafka.common.security.plain.PlainLoginModule required "
            'username="broker" password="broker-secret" user_broker="broker-secret";')
    configs = {
        "listener.name.replication.ssl.keystore.type": "PEM",
        "listener.name.replication.ssl.keystore.location": certs["server"],
        "listener.name.replication.ssl.truststore.type": "PEM",
        "listener.name.replication.ssl.truststore.location": certs["ca"],
        "listener.name.replication.sasl.enabled.mechanisms": "PLAIN",
        "listener.name.replication.plain.sasl.jaas.config": jaas,
        "sasl.mechanism.inter.broker.protocol": "PLAIN",
    }
    # Successful authentications are logged at DEBUG: turn them on to see the brokers'.
    os.environ["RUST_LOG"] = "info,runnel_broker::server::security=debug"
    try:
        c = Cluster(tmp_path / "c", configs=configs, kraft_listeners=True,
                    replication_protocol="SASL_SSL").start()
    finally:
        del os.environ["RUST_LOG"]
    try:
        topic = unique("repl")
        replicated_topic_with_values(c, topic, 20)
        leader, _, _ = c.partition_state(topic)
        c.node(leader).kill9()
        c.wait_for("a new leader in sync", lambda: c.partition_state(topic)[0] not in (-1, leader),
                   timeout=60)
        p = Producer({"bootstrap.servers": c.alive_bootstrap(), "acks": "all", **ck.QUIET})
        for i in range(20, 30):
            p.produce(topic, f"v{i}".encode())
        assert p.flush(30) == 0

        class Alive:
            bootstrap = c.alive_bootstrap()
        got = [m.value() for m in ck.consume(Alive, topic, count=30)]
        assert got == [f"v{i}".encode() for i in range(30)], got
        logs = "".join(log_text(n) for n in c.nodes)
        # No SASL exchange between brokers failed. A TLS handshake cut off by the killed
        # node (its peer saw EOF mid-handshake) is logged too, and is expected here.
        failures = [line for line in logs.splitlines()
                    if "authentication failed" in line and "TLS handshake" not in line]
        assert not failures, failures[:5]
        # The followers' fetchers authenticated on REPLICATION as the broker user.
        assert re.search(r"authenticated .*listener=REPLICATION mechanism=\"?PLAIN\"? principal=User:broker",
                         logs), logs[-3000:]
    finally:
        problems = c.stop()
    assert not problems, "\n".join(problems)


def quorum_port_refuses_plain_tcp(port):
    """A plaintext quorum request (a length-prefixed JSON DescribeQuorum) on a TLS
    controller port: the handshake fails and the voter closes the connection without an
    answer (at most a TLS alert record)."""
    body = json.dumps({"Controller": "DescribeQuorum"}).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(struct.pack(">I", len(body)) + body)
        got = b""
        while True:
            try:
                chunk = s.recv(4096)
            except ConnectionResetError:
                break
            if not chunk:
                break
            got += chunk
    assert got == b"" or got[0] == 0x15, got  # 0x15: a TLS alert, not a frame
    assert b"Quorum" not in got and b"leader" not in got, got


@pytest.mark.timeout_s(240)
@pytest.mark.parametrize("protocol", ["SSL", "SASL_SSL"])
def test_three_nodes_whose_quorum_port_is_secured(tmp_path, protocol):
    """CONTROLLER mapped to SSL (listener.name.controller.ssl.*) or SASL_SSL (PLAIN,
    sasl.mechanism.controller.protocol): Raft between the voters and every broker's
    controller requests go over TLS. The quorum elects, creates topics, admits a
    broker-only node and fails over a killed active controller; a plain TCP connection to
    a controller port is refused at the handshake."""
    certs = make_certs(tmp_path)
    configs = {
        "listener.name.controller.ssl.keystore.type": "PEM",
        "listener.name.controller.ssl.keystore.location": certs["server"],
        "listener.name.controller.ssl.truststore.type": "PEM",
        "listener.name.controller.ssl.truststore.location": certs["ca"],
    }
    if protocol == "SASL_SSL":
        configs.update({
            "sasl.mechanism.controller.protocol": "PLAIN",
            "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
            "listener.name.controller.plain.sasl.jaas.config":
                "org.apache.kafka.common.security.plain.PlainLoginModule required "
                'username="controller" password="c-secret" user_controller="c-secret";',
        })
    os.environ["RUST_LOG"] = "info,runnel_broker::server::security=debug"
    try:
        c = Cluster(tmp_path / "c", configs=configs, kraft_listeners=True,
                    controller_protocol=protocol).start()
    finally:
        del os.environ["RUST_LOG"]
    try:
        logs = "".join(log_text(n) for n in c.nodes)
        started = [line for line in logs.splitlines() if "metadata voter started" in line]
        assert len(started) == 3 and all(re.search(f'protocol="?{protocol}"?', line)
                                          for line in started), started
        if protocol == "SASL_SSL":
            assert re.search(r"quorum connection authenticated .*principal=User:controller",
                             logs), logs[-3000:]
        for n in c.nodes:
            quorum_port_refuses_plain_tcp(n.controller_port)
        topic = unique("ctl-ssl")
        admin = replicated_topic_with_values(c, topic, 10)
        # A broker-only node reaches the voters over TLS too (the client side alone).
        extra = c.add_broker(tmp_path)
        c.wait_for("the broker-only node registered",
                   lambda: extra.node_id in {b.id for b in
                                             admin.describe_cluster().result(10).nodes})
        # Kill the active controller (the voter that logged the latest term): another
        # voter is elected over TLS, and decides.
        def active_controller():
            found = []
            for n in c.nodes[:3]:
                if n.alive():
                    found += [(int(term), n.node_id) for term in
                              re.findall(r"active controller node=\d+ term=(\d+)", log_text(n))]
            return max(found) if found else None
        term, controller = c.wait_for("an active controller", active_controller)
        c.node(controller).kill9()
        c.wait_for("a new active controller",
                   lambda: (active_controller() or (0, 0))[0] > term, timeout=60)
        alive = AdminClient({"bootstrap.servers": c.alive_bootstrap(), **ck.QUIET})
        c.wait_for("a partition leader that is alive",
                   lambda: c.partition_state(topic)[0] not in (-1, controller), timeout=60)
        second = unique("ctl-ssl-after")
        alive.create_topics([NewTopic(second, 1, 3)])[second].result(timeout=30)
        p = Producer({"bootstrap.servers": c.alive_bootstrap(), "acks": "all", **ck.QUIET})
        for i in range(10, 15):
            p.produce(topic, f"v{i}".encode())
        p.produce(second, b"after")
        assert p.flush(30) == 0

        class Alive:
            bootstrap = c.alive_bootstrap()
        got = [m.value() for m in ck.consume(Alive, topic, count=15)]
        assert got == [f"v{i}".encode() for i in range(15)], got
        # The plain attempts above were logged as refused handshakes, nothing else was.
        logs = "".join(log_text(n) for n in c.nodes if n.node_id != controller)
        refused = [line for line in logs.splitlines() if "handshake failed" in line]
        assert refused, logs[-3000:]
    finally:
        problems = c.stop()
    assert not problems, "\n".join(problems)


def plain_auth(c, user, password):
    """SaslHandshake v1 + SaslAuthenticate v1 on an open kwire.Conn -> (error, lifetime)."""
    assert c.request(SASL_HANDSHAKE, 1, kwire.string("PLAIN")).int16() == 0
    r = c.request(SASL_AUTHENTICATE, 1, kwire.nbytes(b"\0" + user.encode() + b"\0" + password.encode()))
    code = r.int16()
    r.string()
    r.take(r.int32())
    return code, r.int64()


@pytest.mark.timeout_s(120)
def test_sessions_expire_unless_reauthenticated(secured):
    """KIP-368: SaslAuthenticate tells the session lifetime; a connection that does not
    re-authenticate in time is closed at its next request; one that does goes on; a
    re-authentication as someone else is refused."""
    port = secured.ports["SASL_PLAINTEXT"]
    with kwire.Conn("127.0.0.1", port) as lapsed, kwire.Conn("127.0.0.1", port) as renewed:
        assert plain_auth(lapsed, "alice", "alice-secret") == (0, 2500)
        assert plain_auth(renewed, "alice", "alice-secret") == (0, 2500)
        time.sleep(1.5)
        assert plain_auth(renewed, "alice", "alice-secret") == (0, 2500)
        time.sleep(1.5)
        assert renewed.api_versions_v0()[0] == 0
        lapsed.send_raw(struct.pack(">ihhi", 11, 18, 0, 99) + kwire.string("x"))
        assert lapsed.closed_by_peer(5) and lapsed.last_bytes == b""
    with kwire.Conn("127.0.0.1", port) as c:
        assert plain_auth(c, "alice", "alice-secret")[0] == 0
        assert c.request(SASL_HANDSHAKE, 1, kwire.string("PLAIN")).int16() == 0
        frame = (struct.pack(">hhi", SASL_AUTHENTICATE, 1, 7) + kwire.string("x")
                 + kwire.nbytes(b"\0admin\0admin-secret"))
        c.send_raw(struct.pack(">i", len(frame)) + frame)
        assert c.closed_by_peer(5)
    log = log_text(secured)
    assert "SASL session expired" in log and 're-authentication as "admin" on a connection of User:alice' in log, log[-2000:]
    # librdkafka re-authenticates by itself: a producer keeps working past several lifetimes.
    topic = ck.create_topic(ck_broker(secured), unique("reauth"))
    def successes():
        m = re.search(r'runnel_authentication_successes_total\{listener="SASL_PLAINTEXT",'
                      r'mechanism="PLAIN"\} (\d+)', metrics(secured))
        return int(m.group(1)) if m else 0
    expired_before, before = log_text(secured).count("SASL session expired"), successes()
    p = Producer({**conf(secured, "SASL_PLAINTEXT", sasl_mechanism="PLAIN", sasl_username="alice",
                         sasl_password="alice-secret"), "linger.ms": 0})
    for i in range(7):
        p.produce(topic, f"r{i}".encode())
        assert p.flush(10) == 0
        time.sleep(1)
    # Re-authentications count as successes; no connection of its was closed as expired.
    assert successes() >= before + 3
    assert log_text(secured).count("SASL session expired") == expired_before


@pytest.mark.timeout_s(120)
def test_kcat_over_sasl_ssl_and_mtls(secured):
    # PLAIN: the apt kcat's librdkafka 2.0.2 echoes its own nonce twice in SCRAM's final
    # message, which Kafka's ScramSaslServer refuses too ("Invalid client nonce"), as
    # Runnel does; SCRAM is covered by confluent-kafka's newer librdkafka above.
    topic = ck.create_topic(ck_broker(secured), unique("kcat"))
    sasl = ["-b", f"127.0.0.1:{secured.ports['SASL_SSL']}", "-X", "security.protocol=SASL_SSL",
            "-X", f"ssl.ca.location={secured.certs['ca']}", "-X", "sasl.mechanisms=PLAIN",
            "-X", "sasl.username=alice", "-X", "sasl.password=alice-secret"]
    r = subprocess.run(["kcat", *sasl, "-P", "-t", topic], input="one\ntwo\n", capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    mtls = ["-b", f"127.0.0.1:{secured.ports['MTLS']}", "-X", "security.protocol=SSL",
            "-X", f"ssl.ca.location={secured.certs['ca']}",
            "-X", f"ssl.certificate.location={secured.certs['cert']}",
            "-X", f"ssl.key.location={secured.certs['key']}"]
    r = subprocess.run(["kcat", *mtls, "-C", "-t", topic, "-o", "beginning", "-e", "-q"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.split() == ["one", "two"], (r.stdout, r.stderr)
    bad = sasl[:-1] + ["sasl.password=wrong"]
    r = subprocess.run(["kcat", *bad, "-L", "-m", "5"], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "uthenticat" in r.stderr, r.stderr


@pytest.mark.timeout_s(120)
def test_oauthbearer_unsecured_jwts(secured, tmp_path):
    """Kafka's development mode: librdkafka's unsecured JWT names the principal."""
    topic = ck.create_topic(ck_broker(secured), unique("oauth"))
    c = {**conf(secured, "OAUTH"), "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "OAUTHBEARER",
         "enable.sasl.oauthbearer.unsecure.jwt": True, "sasl.oauthbearer.config": "principal=alice"}
    roundtrip(c, topic, b"oauth-unsecured")
    # The runnel tools make the same kind of token.
    r = subprocess.run([runnel_bin(), "topics", "list", "-b", f"127.0.0.1:{secured.ports['OAUTH']}",
                        "-X", "security.protocol=SASL_PLAINTEXT", "-X", "sasl.mechanism=OAUTHBEARER",
                        "-X", "sasl.oauthbearer.config=principal=bob", "--timeout", "10"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and topic in r.stdout.split(), r.stderr
    assert re.search(r'runnel_authentication_successes_total\{listener="OAUTH",mechanism="OAUTHBEARER"\} [1-9]',
                     metrics(secured))


def oauth_raw(port, token):
    """SaslHandshake v1 OAUTHBEARER + SaslAuthenticate v1 with `token` -> error code."""
    with kwire.Conn("127.0.0.1", port) as c:
        assert c.request(SASL_HANDSHAKE, 1, kwire.string("OAUTHBEARER")).int16() == 0
        message = f"n,,\x01auth=Bearer {token}\x01\x01".encode()
        return c.request(SASL_AUTHENTICATE, 1, kwire.nbytes(message)).int16()


@pytest.mark.timeout_s(120)
def test_oauthbearer_jwks_signed_tokens(secured):
    topic = ck.create_topic(ck_broker(secured), unique("jwks"))
    good = {"sub": "jwt-user", "iss": "runnel-test", "aud": "runnel", "exp": int(time.time()) + 600}
    token = signed_jwt(secured.jwks["key"], good)
    # librdkafka with a token from oauth_cb.
    roundtrip({"bootstrap.servers": f"127.0.0.1:{secured.ports['OAUTHJWKS']}", **ck.QUIET,
               "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "OAUTHBEARER",
               "oauth_cb": lambda _cfg: (token, time.time() + 600)}, topic, b"jwks")
    port = secured.ports["OAUTHJWKS"]
    assert oauth_raw(port, token) == 0
    for what, bad in (
        ("signed by a key not in the JWKS", signed_jwt(secured.jwks["rogue"], good)),
        ("wrong audience", signed_jwt(secured.jwks["key"], {**good, "aud": "other"})),
        ("wrong issuer", signed_jwt(secured.jwks["key"], {**good, "iss": "evil"})),
        ("expired", signed_jwt(secured.jwks["key"], {**good, "exp": int(time.time()) - 3600})),
        ("unsecured", b64url(b'{"alg":"none"}') + "." + b64url(json.dumps(good).encode()) + "."),
        ("tampered", token[:-6] + ("AAAAAA" if not token.endswith("AAAAAA") else "BBBBBB")),
        ("garbage", "not-a-jwt"),
    ):
        assert oauth_raw(port, bad) == 58, what
    # An unsecured token is fine on the development listener, not on the JWKS one.
    assert oauth_raw(secured.ports["OAUTH"], b64url(b'{"alg":"none"}') + "."
                     + b64url(json.dumps(good).encode()) + ".") == 0
    log = log_text(secured)
    assert "matches no JWKS key" in log and "audience" in log and "expired" in log


@pytest.mark.timeout_s(120)
def test_http_api_over_tls_with_basic_and_bearer_through_the_same_acls(tmp_path):
    """`http.listeners=https://...` serves the admin API over TLS with the broker's
    keystore; `http.authentication.method=BASIC,BEARER` asks for credentials (401 with
    WWW-Authenticate otherwise): PLAIN JAAS users, SCRAM users (the password checked
    against the stored salted key) and JWKS-signed JWTs. The caller's principal goes
    through the authorizer: reads are filtered and changes refused as for a Kafka
    client with that principal."""
    import urllib.error

    from confluent_kafka.admin import (AclBinding, AclOperation, AclPermissionType,
                                       ResourcePatternType, ResourceType)

    certs = make_certs(tmp_path)
    jwks = make_jwks(tmp_path)
    plain_port, sasl_port, oauth_port = free_ports(3)
    b = HttpBroker(tmp_path / "broker", {
        "listeners": f"PLAINTEXT://127.0.0.1:{plain_port},SASL_PLAINTEXT://127.0.0.1:{sasl_port},"
                     f"OAUTH://127.0.0.1:{oauth_port}",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,"
                                          "OAUTH:SASL_PLAINTEXT",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.name.sasl_plaintext.sasl.enabled.mechanisms": "PLAIN,SCRAM-SHA-256",
        "listener.name.sasl_plaintext.plain.sasl.jaas.config": JAAS,
        "listener.name.oauth.sasl.enabled.mechanisms": "OAUTHBEARER",
        "listener.name.oauth.oauthbearer.sasl.server.callback.handler.class":
            "org.apache.kafka.common.security.oauthbearer.OAuthBearerValidatorCallbackHandler",
        "sasl.oauthbearer.jwks.endpoint.url": "file://" + jwks["path"],
        "sasl.oauthbearer.expected.audience": "runnel",
        "http.listeners": "https://127.0.0.1:0",
        "listener.name.http.ssl.keystore.type": "PEM",
        "listener.name.http.ssl.keystore.location": certs["server"],
        # mTLS on the HTTP listener: a verified client certificate is a principal too.
        "listener.name.http.ssl.client.auth": "requested",
        "listener.name.http.ssl.truststore.type": "PEM",
        "listener.name.http.ssl.truststore.location": certs["ca"],
        "listener.name.http.ssl.principal.mapping.rules": "RULE:^.*CN=([a-z]+).*$/$1/,DEFAULT",
        "http.authentication.method": "BASIC,BEARER",
        "http.authentication.skip.paths": "/v1/health",
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "super.users": "User:admin",
    }, name="https")
    b.start()
    tls = ssl.create_default_context(cafile=certs["ca"])

    def call(path, auth=None, method="GET", body=None):
        req = urllib.request.Request(
            f"https://127.0.0.1:{b.http_port}{path}", method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json",
                     **({"Authorization": auth} if auth else {})})
        try:
            with urllib.request.urlopen(req, timeout=15, context=tls) as r:
                return r.status, r.headers, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read().decode()

    def basic(user, password):
        return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    def topics(auth):
        status, _, text = call("/v1/topics", auth)
        assert status == 200, text
        return [t["name"] for t in json.loads(text)["topics"]]

    admin = basic("admin", PLAIN_USERS["admin"])
    alice = basic("alice", PLAIN_USERS["alice"])
    try:
        # Plain HTTP on the HTTPS port gets no answer.
        with pytest.raises(Exception):
            urllib.request.urlopen(f"http://127.0.0.1:{b.http_port}/v1/health", timeout=5)
        # No credentials: 401 with a challenge per method; skip paths stay open.
        for path in ("/v1/topics", "/", "/metrics"):
            status, headers, text = call(path)
            assert status == 401, (path, text)
            challenges = headers.get_all("WWW-Authenticate")
            assert any(c.startswith("Basic realm=") for c in challenges), challenges
            assert any(c.startswith("Bearer realm=") for c in challenges), challenges
            assert "credentials" in json.loads(text)["error"]
        assert call("/v1/health")[0] == 200
        # Wrong password, unknown user, garbage: 401.
        for bad in (basic("admin", "nope"), basic("mallory", "x"), "Basic !!!", "Digest x"):
            assert call("/v1/topics", bad)[0] == 401, bad
        # The super user (a PLAIN JAAS user) creates a topic; alice (no ACL) neither sees
        # it nor may create one: the same authorizer as on the Kafka listeners.
        status, _, text = call("/v1/topics", admin, "POST", {"name": "h1", "partitions": 1})
        assert status in (200, 201), text
        assert "h1" in topics(admin)
        assert topics(alice) == []
        status, _, text = call("/v1/topics", alice, "POST", {"name": "h2", "partitions": 1})
        assert status == 403 and "TOPIC_AUTHORIZATION_FAILED" in text, text
        # A SCRAM user created through AlterUserScramCredentials, then an ACL for it.
        a = AdminClient({"bootstrap.servers": f"127.0.0.1:{sasl_port}", **ck.QUIET,
                         "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN",
                         "sasl.username": "admin", "sasl.password": PLAIN_USERS["admin"]})
        info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 4096)
        for f in a.alter_user_scram_credentials(
                [UserScramCredentialUpsertion("carol", info, b"carol-secret")]).values():
            f.result(20)
        carol = basic("carol", "carol-secret")
        assert topics(carol) == []
        assert call("/v1/topics", basic("carol", "wrong"))[0] == 401
        for f in a.create_acls([AclBinding(
                ResourceType.TOPIC, "h1", ResourcePatternType.LITERAL, "User:carol", "*",
                AclOperation.DESCRIBE, AclPermissionType.ALLOW)], request_timeout=10).values():
            f.result()
        deadline = time.monotonic() + 10
        while topics(carol) != ["h1"] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert topics(carol) == ["h1"]
        # A client certificate (CN=alice, mapped to "alice") authenticates without a
        # header: User:alice, who sees nothing until an ACL names her.
        mtls = ssl.create_default_context(cafile=certs["ca"])
        mtls.load_cert_chain(certs["cert"], certs["key"])

        def topics_by_cert():
            with urllib.request.urlopen(f"https://127.0.0.1:{b.http_port}/v1/topics",
                                        timeout=15, context=mtls) as r:
                return [t["name"] for t in json.loads(r.read())["topics"]]
        assert topics_by_cert() == []
        for f in a.create_acls([AclBinding(
                ResourceType.TOPIC, "h1", ResourcePatternType.LITERAL, "User:alice", "*",
                AclOperation.DESCRIBE, AclPermissionType.ALLOW)], request_timeout=10).values():
            f.result()
        deadline = time.monotonic() + 10
        while topics_by_cert() != ["h1"] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert topics_by_cert() == ["h1"]
        # Bearer: a JWKS-signed token for admin sees everything; a rogue one is refused.
        good = {"sub": "admin", "aud": "runnel", "exp": int(time.time()) + 600,
                "iat": int(time.time())}
        assert "h1" in topics("Bearer " + signed_jwt(jwks["key"], good))
        assert call("/v1/topics", "Bearer " + signed_jwt(jwks["rogue"], good))[0] == 401
        # Failures are counted per mechanism under listener HTTP.
        status, _, text = call("/metrics", admin)
        assert status == 200
        failures = [line for line in text.splitlines()
                    if line.startswith("runnel_authentication_failures_total")
                    and 'listener="HTTP"' in line]
        assert any('mechanism="BASIC"' in line for line in failures), failures
        assert any('mechanism="BEARER"' in line for line in failures), failures
        log = b.log_tail(400)
        assert "authentication failed" in log and "carol-secret" not in log
    finally:
        problems = b.stop()
    assert not problems, problems
