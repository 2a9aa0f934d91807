"""A history checker for Kafka transactions (confluent-kafka / librdkafka clients).

Several transactional producers (subprocesses, one transactional.id each) write unique
values, each transaction spread over several partitions of several topics; some
transactions are aborted on purpose, some producers are kill -9ed in the middle of a
transaction (then restarted with the same transactional.id, or abandoned so that the
broker's transaction timeout must abort them). A reader in this process follows every
partition with read_committed while they run. Afterwards every partition is read again
with read_committed (and read_uncommitted, to see what reached the log) and the history
is checked for:

- aborted reads:   a record of a transaction that was aborted (on purpose, or because
                   its producer died before asking to commit) read under read_committed;
- early reads:     a record read under read_committed before its producer even asked to
                   commit (the live reader's clock against the producer's; both are
                   CLOCK_MONOTONIC on the same host);
- torn:            a transaction with some of its records visible under read_committed
                   and others not (e.g. one partition committed, another not);
- duplicates:      the same value read twice under read_committed;
- lost:            a transaction whose commit_transaction() returned successfully but
                   whose records are not all visible under read_committed;
- unknown:         a value nobody wrote.

Values are "w{writer}.g{generation}.t{txn}.r{index}.n{count}.{C|A}" (C: the producer
means to commit, A: to abort). A restarted producer has the next generation, so values
stay unique.

Library use: `check(bootstrap, topics, ...)` returns a Report. Command line:
    python txn_checker.py run --bootstrap 127.0.0.1:9092 [--producers 4 --txns 30 ...]
which creates its own topics and prints the report as JSON (exit 1 on an anomaly).
"""

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field

VALUE = re.compile(r"^w(\d+)\.g(\d+)\.t(\d+)\.r(\d+)\.n(\d+)\.([CA])$")
QUIET = {"log_level": 3}


def _die_with_parent():
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


# ---------------------------------------------------------------- the producer process


def producer_main(cfg):
    """One transactional producer. Prints one JSON event per line on stdout, each with
    t = time.monotonic() taken *before* the step it announces."""
    from confluent_kafka import KafkaException, Producer

    def emit(**kw):
        kw.setdefault("t", time.monotonic())
        sys.stdout.write(json.dumps(kw) + "\n")
        sys.stdout.flush()

    w, g = cfg["writer"], cfg["gen"]
    rnd = random.Random(cfg["seed"] * 1000 + g)
    parts = [tuple(tp) for tp in cfg["partitions"]]
    p = Producer({"bootstrap.servers": cfg["bootstrap"], "transactional.id": cfg["txn_id"],
                  "transaction.timeout.ms": cfg["txn_timeout_ms"], "linger.ms": 2, **QUIET})
    t0 = time.monotonic()
    p.init_transactions(30)
    emit(ev="init", dt=time.monotonic() - t0)
    failures = []

    def on_delivery(err, msg):
        if err is not None:
            failures.append(str(err))

    for t in range(cfg["txns"]):
        n = rnd.randint(2, cfg["max_records"])
        intent = "A" if rnd.random() < cfg["abort_ratio"] else "C"
        first = rnd.randrange(len(parts))
        p.begin_transaction()
        emit(ev="begin", txn=t, n=n, intent=intent)
        for i in range(n):
            topic, part = parts[(first + i) % len(parts)]  # consecutive partitions: spread over topics
            v = f"w{w}.g{g}.t{t}.r{i}.n{n}.{intent}".encode()
            while True:
                try:
                    p.produce(topic, value=v, key=v, partition=part, on_delivery=on_delivery)
                    break
                except BufferError:
                    p.poll(0.01)
        left = p.flush(30)
        emit(ev="flushed", txn=t, left=left, failures=len(failures))
        if cfg.get("hold_at") == t:
            time.sleep(60)  # the parent kills us here, in the middle of the transaction
        try:
            if intent == "A":
                emit(ev="aborting", txn=t)
                p.abort_transaction(30)
                emit(ev="aborted", txn=t)
            else:
                emit(ev="committing", txn=t)
                p.commit_transaction(30)
                emit(ev="committed", txn=t)
        except KafkaException as e:
            err = e.args[0]
            emit(ev="error", txn=t, error=str(err), fatal=err.fatal(),
                 abortable=err.txn_requires_abort(), retriable=err.retriable())
            if err.fatal():
                sys.exit(3)
            if err.txn_requires_abort():
                p.abort_transaction(30)
                emit(ev="aborted", txn=t, after_error=True)
        if failures:
            emit(ev="delivery-failures", txn=t, failures=failures[:5])
            failures.clear()
        if cfg.get("pause_s"):
            time.sleep(cfg["pause_s"])
    emit(ev="done")


class ProducerProc:
    def __init__(self, cfg):
        self.cfg = cfg
        self.events = []
        self.cond = threading.Condition()
        self.stderr = []
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "producer", json.dumps(cfg)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            preexec_fn=_die_with_parent)
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=lambda: self.stderr.extend(self.proc.stderr), daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            with self.cond:
                self.events.append(ev)
                self.cond.notify_all()
        with self.cond:
            self.events.append({"ev": "eof"})
            self.cond.notify_all()

    def wait_for(self, pred, timeout):
        deadline = time.monotonic() + timeout
        with self.cond:
            while not any(pred(e) for e in self.events):
                left = deadline - time.monotonic()
                if left <= 0 or (self.events and self.events[-1]["ev"] == "eof"):
                    return False
                self.cond.wait(min(left, 0.5))
            return True

    def kill9(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


# ---------------------------------------------------------------- readers


def _consumer(bootstrap, isolation):
    from confluent_kafka import Consumer
    return Consumer({"bootstrap.servers": bootstrap, "group.id": "txn-checker-assign-only",
                     "enable.auto.commit": False, "enable.auto.offset.store": False,
                     "enable.partition.eof": True, "isolation.level": isolation,
                     "fetch.wait.max.ms": 100, **QUIET})


class LiveReader:
    """Follows every partition with read_committed; records (value, time seen)."""

    def __init__(self, bootstrap, partitions):
        from confluent_kafka import TopicPartition
        self.c = _consumer(bootstrap, "read_committed")
        self.c.assign([TopicPartition(t, p, 0) for t, p in partitions])
        self.seen = []  # (monotonic, value, topic, partition, offset)
        self.errors = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        from confluent_kafka import KafkaError
        while not self.stop.is_set():
            m = self.c.poll(0.1)
            if m is None:
                continue
            now = time.monotonic()
            if m.error():
                if m.error().code() != KafkaError._PARTITION_EOF:
                    self.errors.append(str(m.error()))
                continue
            self.seen.append((now, m.value().decode(errors="replace"), m.topic(), m.partition(), m.offset()))

    def close(self):
        self.stop.set()
        self.thread.join(10)
        self.c.close()


def end_offsets(bootstrap, partitions, isolation, timeout=10):
    """ListOffsets latest with the given isolation level: {(topic, partition): offset}."""
    from confluent_kafka import IsolationLevel, TopicPartition
    from confluent_kafka.admin import AdminClient, OffsetSpec
    a = AdminClient({"bootstrap.servers": bootstrap, **QUIET})
    level = IsolationLevel.READ_COMMITTED if isolation == "read_committed" else IsolationLevel.READ_UNCOMMITTED
    fs = a.list_offsets({TopicPartition(t, p): OffsetSpec.latest() for t, p in partitions},
                        isolation_level=level, request_timeout=timeout)
    return {(tp.topic, tp.partition): f.result(timeout).offset for tp, f in fs.items()}


def read_all(bootstrap, partitions, isolation, timeout=30):
    """Every record of every partition up to the end for this isolation level (EOF)."""
    from confluent_kafka import KafkaError, TopicPartition
    c = _consumer(bootstrap, isolation)
    try:
        c.assign([TopicPartition(t, p, 0) for t, p in partitions])
        out = []
        eof = set()
        deadline = time.monotonic() + timeout
        while len(eof) < len(partitions):
            if time.monotonic() > deadline:
                raise AssertionError(f"{isolation}: no end of partition for "
                                     f"{sorted(set(partitions) - eof)} within {timeout}s")
            m = c.poll(0.2)
            if m is None:
                continue
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    eof.add((m.topic(), m.partition()))
                    continue
                raise AssertionError(f"{isolation} consumer error: {m.error()}")
            eof.discard((m.topic(), m.partition()))
            out.append((m.value().decode(errors="replace"), m.topic(), m.partition(), m.offset()))
        return out
    finally:
        c.close()


# ---------------------------------------------------------------- the run


@dataclass
class Report:
    producers: int = 0
    kills: int = 0
    txns_begun: int = 0
    commits_acked: int = 0
    aborts_acked: int = 0
    commit_unknown: int = 0   # killed between "committing" and "committed"
    killed_open: int = 0      # killed before asking to commit: must be aborted
    errors: list = field(default_factory=list)
    records_written: int = 0  # read_uncommitted
    records_committed: int = 0
    live_records: int = 0
    aborted_reads: list = field(default_factory=list)
    early_reads: list = field(default_factory=list)
    torn: list = field(default_factory=list)
    duplicates: list = field(default_factory=list)
    lost: list = field(default_factory=list)
    unknown: list = field(default_factory=list)
    live_errors: list = field(default_factory=list)
    seconds: float = 0.0

    def anomalies(self):
        return {k: getattr(self, k) for k in
                ("aborted_reads", "early_reads", "torn", "duplicates", "lost", "unknown")
                if getattr(self, k)}

    def summary(self):
        d = {k: v for k, v in self.__dict__.items() if not isinstance(v, list)}
        d.update({k: len(getattr(self, k)) for k in
                  ("aborted_reads", "early_reads", "torn", "duplicates", "lost", "unknown", "errors")})
        return d


def check(bootstrap, partitions, producers=4, txns=25, max_records=6, abort_ratio=0.3,
          kill_restart=(1,), kill_abandon=(2,), kill_random=(3,), kill_at_txn=5, txn_timeout_ms=4000,
          pause_s=0.0, seed=1, timeout=120, log=print):
    """Run the history and check it. partitions: [(topic, partition)], all existing.
    kill_restart: writers kill -9ed mid-transaction at txn `kill_at_txn` and restarted
    with the same transactional.id; kill_abandon: killed likewise and never restarted
    (the broker's transaction timeout must abort their open transaction); kill_random:
    writers kill -9ed within a few ms of calling commit_transaction() on a randomly
    chosen transaction, and restarted."""
    t_start = time.monotonic()
    deadline = t_start + timeout
    rep = Report(producers=producers)
    run = uuid.uuid4().hex[:6]
    reader = LiveReader(bootstrap, partitions)

    def cfg(w, g, hold):
        return {"bootstrap": bootstrap, "writer": w, "gen": g, "seed": seed * 100 + w,
                "txn_id": f"txn-checker-{run}-{w}", "partitions": partitions, "txns": txns,
                "max_records": max_records, "abort_ratio": abort_ratio,
                "txn_timeout_ms": txn_timeout_ms, "hold_at": hold, "pause_s": pause_s}

    procs = []  # every generation of every writer
    live = {}
    gens = defaultdict(int)
    done = threading.Event()
    for w in range(producers):
        hold = kill_at_txn if (w in kill_restart or w in kill_abandon) else None
        live[w] = ProducerProc(cfg(w, 0, hold))
        procs.append(live[w])
    try:
        lock = threading.Lock()
        failures = []

        def linger():
            done.wait(timeout + 30)

        def hold_kill(w):
            pp = live[w]
            ok = pp.wait_for(lambda e: e["ev"] == "flushed" and e["txn"] == kill_at_txn,
                             max(1, deadline - time.monotonic()))
            if not ok:
                failures.append(f"writer {w} never reached transaction {kill_at_txn}: "
                                f"{pp.events[-5:]} {''.join(pp.stderr[-20:])}")
                return
            pp.kill9()
            log(f"killed writer {w} (gen 0) in the middle of transaction {kill_at_txn}")
            with lock:
                rep.kills += 1
                if w in kill_restart:
                    gens[w] += 1
                    live[w] = ProducerProc(cfg(w, gens[w], None))
                    procs.append(live[w])
            linger()

        def random_kill(w, at, delay):
            # Killed just after it asked to commit (EndTxn likely in flight or just answered).
            pp = live[w]
            pp.wait_for(lambda e: e["ev"] == "committing" and e["txn"] >= at, max(1, deadline - time.monotonic()))
            time.sleep(delay)
            pp.kill9()
            last = [e for e in pp.events if "txn" in e][-3:]
            log(f"killed writer {w} (gen {gens[w]}) while committing, after {last}")
            with lock:
                rep.kills += 1
                gens[w] += 1
                live[w] = ProducerProc(cfg(w, gens[w], None))
                procs.append(live[w])
            linger()

        rnd = random.Random(seed)
        killers = [threading.Thread(target=hold_kill, args=(w,)) for w in list(kill_restart) + list(kill_abandon)]
        killers += [threading.Thread(target=random_kill, args=(w, rnd.randint(2, max(2, txns - 3)), rnd.uniform(0.0, 0.001)))
                    for w in kill_random]
        # The killer threads start the restarted producers, whose parent-death signal is
        # tied to the thread that started them: keep the threads alive until the end.
        for k in killers:
            k.start()
        while any(k.is_alive() for k in killers) and time.monotonic() < deadline:
            with lock:
                if rep.kills == len(killers) or failures:
                    break
            time.sleep(0.05)
        if failures:
            raise AssertionError("; ".join(failures))
        for w, pp in live.items():
            if w in kill_abandon:
                continue
            left = max(1, deadline - time.monotonic())
            try:
                code = pp.proc.wait(left)
            except subprocess.TimeoutExpired:
                pp.kill9()
                raise AssertionError(f"writer {w} did not finish within the run's {timeout}s: "
                                     f"{pp.events[-5:]}")
            if code != 0:
                rep.errors.append(f"writer {w} exited {code}: {pp.events[-3:]} {''.join(pp.stderr[-10:])}")
        # Every transaction is now finished or abandoned; the abandoned ones must be
        # aborted by the broker's timeout, after which the LSO reaches the high watermark.
        while True:
            lso = end_offsets(bootstrap, partitions, "read_committed")
            hw = end_offsets(bootstrap, partitions, "read_uncommitted")
            if lso == hw:
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"the last stable offset never reached the high watermark "
                                     f"(open transactions left): LSO {lso} HW {hw}")
            time.sleep(0.2)
        committed = read_all(bootstrap, partitions, "read_committed",
                             timeout=max(5, deadline - time.monotonic()))
        written = read_all(bootstrap, partitions, "read_uncommitted",
                           timeout=max(5, deadline - time.monotonic()))
        # Let the live reader catch up to the end.
        catch_up = time.monotonic() + 10
        while len(reader.seen) < len(committed) and time.monotonic() < catch_up:
            time.sleep(0.1)
    finally:
        for pp in procs:
            pp.kill9()
        done.set()
        reader.close()

    # ------------------------------------------------ what the producers did
    # txn key: (writer, gen, txn) -> dict(n, intent, outcome, t_commit)
    txns_log = {}
    for pp in procs:
        w, g = pp.cfg["writer"], pp.cfg["gen"]
        killed = pp.proc.returncode == -signal.SIGKILL
        for e in pp.events:
            if "txn" not in e:
                continue
            k = (w, g, e["txn"])
            st = txns_log.setdefault(k, {"outcome": "open", "t_commit": None})
            if e["ev"] == "begin":
                st.update(n=e["n"], intent=e["intent"])
                rep.txns_begun += 1
            elif e["ev"] == "committing":
                st.update(outcome="committing", t_commit=e["t"])
            elif e["ev"] == "committed":
                st["outcome"] = "committed"
            elif e["ev"] == "aborted":
                st["outcome"] = "aborted"
            elif e["ev"] == "aborting":
                st["outcome"] = "aborting"
            elif e["ev"] == "error":
                rep.errors.append(f"w{w}.g{g}.t{e['txn']}: {e['error']}")
                st["outcome"] = "error-" + st["outcome"]
            elif e["ev"] == "delivery-failures":
                rep.errors.append(f"w{w}.g{g}.t{e['txn']}: delivery failures {e['failures']}")
        if killed:
            for (ww, gg, t), st in txns_log.items():
                if (ww, gg) == (w, g) and st["outcome"] in ("open", "committing", "aborting"):
                    st["killed"] = True
    for st in txns_log.values():
        if st["outcome"] == "committed":
            rep.commits_acked += 1
        elif st["outcome"] == "aborted":
            rep.aborts_acked += 1
        elif st.get("killed") and st["outcome"] == "committing":
            rep.commit_unknown += 1
        elif st.get("killed"):
            rep.killed_open += 1

    def may_be_visible(st):
        # Visible is allowed only if the producer asked to commit.
        return st.get("intent") == "C" and st["outcome"] in ("committing", "committed", "error-committing")

    # ------------------------------------------------ what was read
    rep.records_committed = len(committed)
    rep.records_written = len(written)
    rep.live_records = len(reader.seen)
    rep.live_errors = reader.errors[:10]
    count = defaultdict(int)
    per_txn = defaultdict(set)
    for v, topic, part, off in committed:
        count[v] += 1
        m = VALUE.match(v)
        if not m:
            rep.unknown.append((v, topic, part, off))
            continue
        w, g, t, r, n, intent = m.groups()
        k = (int(w), int(g), int(t))
        st = txns_log.get(k)
        if st is None:
            rep.unknown.append((v, topic, part, off))
            continue
        per_txn[k].add(int(r))
        if not may_be_visible(st) or intent != "C":
            rep.aborted_reads.append((v, topic, part, off, st["outcome"]))
    rep.duplicates = [(v, c) for v, c in count.items() if c > 1]
    for k, st in txns_log.items():
        n = st.get("n")
        got = per_txn.get(k, set())
        if n is None:
            continue
        if got and len(got) != n:
            rep.torn.append({"txn": "w%d.g%d.t%d" % k, "visible": sorted(got), "of": n,
                             "outcome": st["outcome"]})
        if st["outcome"] == "committed" and len(got) != n:
            rep.lost.append({"txn": "w%d.g%d.t%d" % k, "visible": sorted(got), "of": n})
    # Live reads: nothing of a transaction before its producer asked to commit, and
    # nothing the final read_committed read would not also show.
    final = set(v for v, *_ in committed)
    live_count = defaultdict(int)
    for now, v, topic, part, off in reader.seen:
        live_count[v] += 1
        m = VALUE.match(v)
        st = txns_log.get((int(m.group(1)), int(m.group(2)), int(m.group(3)))) if m else None
        if st is None:
            rep.unknown.append((v, topic, part, off, "live"))
            continue
        if v not in final:
            rep.aborted_reads.append((v, topic, part, off, st["outcome"], "live"))
        elif st["t_commit"] is None or now < st["t_commit"]:
            rep.early_reads.append((v, topic, part, off, now, st["t_commit"]))
    rep.duplicates += [(v, c, "live") for v, c in live_count.items() if c > 1]
    rep.seconds = round(time.monotonic() - t_start, 1)
    return rep


# ---------------------------------------------------------------- command line


def _create_topics(bootstrap, spec):
    from confluent_kafka.admin import AdminClient, NewTopic
    a = AdminClient({"bootstrap.servers": bootstrap, **QUIET})
    fs = a.create_topics([NewTopic(t, num_partitions=n, replication_factor=1) for t, n in spec.items()],
                         operation_timeout=15, request_timeout=15)
    for f in fs.values():
        f.result(15)
    deadline = time.monotonic() + 15
    while True:
        md = a.list_topics(timeout=5)
        if all(t in md.topics and len(md.topics[t].partitions) == n for t, n in spec.items()):
            return [(t, p) for t, n in spec.items() for p in range(n)]
        if time.monotonic() > deadline:
            raise AssertionError(f"topics {spec} not visible")
        time.sleep(0.1)


def main(argv):
    if argv[:1] == ["producer"]:
        producer_main(json.loads(argv[1]))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cmd", choices=["run"])
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--producers", type=int, default=4)
    ap.add_argument("--txns", type=int, default=30)
    ap.add_argument("--abort-ratio", type=float, default=0.3)
    ap.add_argument("--txn-timeout-ms", type=int, default=4000,
                    help="the broker's abort check interval must be well below this")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=300)
    a = ap.parse_args(argv)
    run = uuid.uuid4().hex[:6]
    parts = _create_topics(a.bootstrap, {f"chk-a-{run}": 3, f"chk-b-{run}": 2})
    rep = check(a.bootstrap, parts, producers=a.producers, txns=a.txns, abort_ratio=a.abort_ratio,
                txn_timeout_ms=a.txn_timeout_ms, seed=a.seed, timeout=a.timeout,
                log=lambda s: print(s, file=sys.stderr))
    print(json.dumps({"summary": rep.summary(), "anomalies": rep.anomalies(), "errors": rep.errors},
                     indent=2, default=str))
    return 1 if rep.anomalies() else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
