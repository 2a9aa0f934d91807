"""`runnel sql` and `runnel demo tweets` in the first hour (issues 16, 17), through the
real binary ($RUNNEL_BIN, built with the sql feature): a misspelled source or sink option
is an error that suggests the right name; a wrong address fails within seconds naming it;
a missing topic is named while the query waits for it; a checkpoint is refused to another
query; each batch prints one progress line; the demo reports progress and a summary."""

import os
import subprocess
import time

import pytest

import ck
from cluster import free_ports
from harness import runnel_bin, unique


def has_sql():
    r = subprocess.run([runnel_bin(), "--help"], capture_output=True, text=True, timeout=30)
    return "\n  sql " in r.stdout


pytestmark = pytest.mark.skipif(not has_sql(), reason="this binary was built without the sql feature")


def sql(query, *args, expect=None, timeout=60):
    r = subprocess.run([runnel_bin(), "sql", "-e", query, *args], capture_output=True, text=True,
                       timeout=timeout)
    if expect is not None:
        assert r.returncode == expect, f"exited {r.returncode}, expected {expect}:\n{r.stdout}\n{r.stderr}"
    return r


def kafka_view(bootstrap, extra):
    return (f"CREATE TEMPORARY VIEW t USING kafka OPTIONS "
            f"(kafka.bootstrap.servers '{bootstrap}', {extra});\n")


def test_misspelled_or_unsupported_options_are_refused():
    port, = free_ports(1)
    b = f"127.0.0.1:{port}"
    r = sql(kafka_view(b, "subscribe 'x', startingOffset 'earliest'") + "SELECT value FROM t;", expect=1)
    assert "startingOffset" in r.stderr and 'did you mean "startingOffsets"' in r.stderr, r.stderr
    r = sql(kafka_view(b, "subscribe 'x', kafkaConsumer.pollTimeoutMs '512'") + "SELECT value FROM t;", expect=1)
    assert "kafkaConsumer.pollTimeoutMs" in r.stderr and "not supported by Runnel yet" in r.stderr, r.stderr
    # Spark's options Runnel implements are checked: a bad value is named.
    r = sql(kafka_view(b, "subscribe 'x', startingOffsetsByTimestampStrategy 'first'") + "SELECT value FROM t;", expect=1)
    assert "startingOffsetsByTimestampStrategy" in r.stderr and "'error' or 'latest'" in r.stderr, r.stderr
    # A sink's misspelled option, next to a query-level one it does know.
    r = sql(kafka_view(b, "subscribe 'x'")
            + "CREATE TEMPORARY VIEW out USING console OPTIONS (outputMode 'append', numRow '5');\n"
            + "INSERT INTO out SELECT value FROM t;", expect=1)
    assert 'did you mean "numRows"' in r.stderr, r.stderr


def test_no_broker_at_the_address_fails_fast_naming_it():
    port, = free_ports(1)
    b = f"127.0.0.1:{port}"
    started = time.monotonic()
    r = sql(kafka_view(b, "subscribe 'x'") + "SELECT value FROM t;", expect=1, timeout=30)
    assert time.monotonic() - started < 20
    assert b in r.stderr and "no Kafka broker answered" in r.stderr, r.stderr
    started = time.monotonic()
    d = subprocess.run([runnel_bin(), "demo", "tweets", "-b", b, "--count", "5"],
                       capture_output=True, text=True, timeout=30)
    assert d.returncode == 1 and b in d.stderr, d.stderr
    assert time.monotonic() - started < 20


def test_missing_topic_is_named(broker):
    missing = unique("no-such-topic")
    r = sql(kafka_view(broker.bootstrap, f"""assign '{{"{missing}":[0]}}'""") + "SELECT value FROM t;",
            expect=1, timeout=30)
    assert "UnknownTopicOrPartition" in r.stderr and missing in r.stderr, r.stderr
    # subscribe waits for the topic, as Spark does, saying which one it waits for.
    p = subprocess.Popen([runnel_bin(), "sql", "-e",
                          kafka_view(broker.bootstrap, f"subscribe '{missing}'") + "SELECT value FROM t;"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        seen = []
        while time.monotonic() < deadline:
            line = p.stderr.readline()
            if not line:
                break
            seen.append(line)
            if missing in line and "does not exist" in line:
                break
        else:
            pytest.fail("no warning naming the topic: " + "".join(seen))
        assert any(missing in s and "does not exist" in s for s in seen), "".join(seen)
    finally:
        p.terminate()
        p.wait(timeout=30)


def test_progress_lines_and_checkpoint_refusal(broker, tmp_path):
    topic = ck.create_topic(broker, unique("sqlcp"))
    other = ck.create_topic(broker, unique("sqlcp-other"))
    p = ck.producer(broker)
    assert ck.produce_all(p, topic, [{"value": f"v{i}".encode()} for i in range(3)], partition=0).failed == []
    cp = str(tmp_path / "cp")
    bounded = "startingOffsets 'earliest', endingOffsets 'latest'"
    query = kafka_view(broker.bootstrap, f"subscribe '{topic}', {bounded}") + \
        "SELECT CAST(value AS STRING) AS v FROM t;"
    r = sql(query, "--checkpoint", cp, expect=0)
    assert "batch 0: 3 rows in (" in r.stderr, r.stderr
    assert "{" not in r.stderr, r.stderr  # no JSON by default
    # The same query again resumes (nothing new: no batch, no line).
    r = sql(query, "--checkpoint", cp, expect=0)
    assert "batch 0" not in r.stderr, r.stderr
    # Another query, or another topic, on that checkpoint is refused.
    r = sql(query.replace("AS v", "AS w"), "--checkpoint", cp, expect=1)
    assert cp in r.stderr and "another query" in r.stderr, r.stderr
    r = sql(query.replace(topic, other), "--checkpoint", cp, expect=1)
    assert cp in r.stderr and f"Subscribe[{topic}]" in r.stderr and f"Subscribe[{other}]" in r.stderr, r.stderr
    # --progress (bare, the old flag) still prints Spark's JSON.
    r = sql(query, "--checkpoint", str(tmp_path / "cp2"), "--progress", expect=0)
    assert '"numInputRows": 3' in r.stderr, r.stderr


def test_demo_reports_progress_and_a_summary(broker):
    topic = ck.create_topic(broker, unique("demo"))
    r = subprocess.run([runnel_bin(), "demo", "tweets", "-b", broker.bootstrap, "-t", topic,
                        "--rate", "400", "--count", "2400"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert f"sent to {topic} (" in r.stderr, r.stderr  # the line every 5 s
    assert f"sent 2400 tweets to {topic}" in r.stderr, r.stderr


def test_spark_users_query_kafka_columns_and_errors_point_at_the_line(broker):
    """Issue 17: `SELECT partition, offset` (Spark's non-reserved keywords as the Kafka
    source's columns), names in any case, and an error with the file's line and a caret."""
    from confluent_kafka import Producer
    topic = unique("kcols")
    p = Producer({"bootstrap.servers": broker.bootstrap})
    for i in range(5):
        p.produce(topic, key=f"k{i}", value=f"v{i}", partition=0)
    assert p.flush(30) == 0
    view = kafka_view(broker.bootstrap, f"subscribe '{topic}', startingOffsets 'earliest', endingOffsets 'latest'")
    r = sql(view + "SELECT partition, offset, TimestampType, CAST(value AS STRING) AS v FROM t;",
            expect=0, timeout=60)
    assert "|partition|offset|timestampType|v" in r.stdout.replace(" ", ""), r.stdout
    rows = [line.replace(" ", "") for line in r.stdout.splitlines() if line.startswith("|") and "v" in line]
    for i in range(5):
        assert f"|0|{i}|0|v{i}|" in rows, r.stdout
    r = sql(view + "SELECT partition,\n       ofset FROM t;", expect=1, timeout=60)
    assert "ofset" in r.stderr and "Valid fields are" in r.stderr, r.stderr
    assert "at line 3, column 8:" in r.stderr and "\n  3 |        ofset FROM t;\n    |        ^" in r.stderr, r.stderr
