//! A seeded fault test of a 3-node cluster in one process: the history checker's
//! workload (support/history.rs) against crashes and restarts.
//!
//! Three nodes (each a `Server` on its own tokio runtime, temp data dir and fixed
//! 127.0.0.1 ports; every node a voter and a broker) hold a topic of 3 partitions with
//! replication factor 3 and `min.insync.replicas=2`. Writers (three per partition)
//! produce unique values with acks=all and idempotence (one producer id each, one
//! batch in flight, resent as is while the error may pass, for up to 15 s; a send
//! that still fails is indeterminate and the writer takes a new producer id).
//! Meanwhile the fault schedule crashes nodes (the runtime is dropped: connections and
//! listeners close at once, files stay as after `kill -9`) and restarts them on their
//! data dirs, or stalls their replication traffic (the inter-broker listener is behind
//! a proxy that stops forwarding without closing: followers stop fetching, the ISR
//! shrinks), or stalls and then crashes them. Then every partition is read back and checked: no acknowledged value lost
//! or changed, none duplicated, reordered or unexpected.
//!
//! Not simulated: a paused process (SIGSTOP; the Python suite does that), a disk that
//! loses unsynced writes (a crash here keeps the page cache, as `kill -9` does), and
//! partitions of the client or quorum traffic.
//!
//! Run: `cargo test -p runnel-broker --test sim`. `RUNNEL_SIM_SEED=<u64>` picks the
//! seed (default below), `RUNNEL_SIM_ROUNDS=<n>` the number of faults (default 3; the
//! default run takes well under a minute in a debug build).
//!
//! What a seed reproduces: the fault schedule (which nodes crash, in which order, how
//! long they are up and down) and the workload (writers, values, partitions) are pure
//! functions of the seed. What it does not: the schedule runs in real time against real
//! threads, sockets and elections, so which requests are in flight at a crash, who leads
//! what and when differ from run to run. A failing seed is a strong hint, not a replay:
//! run it again (a few times) to reproduce.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use runnel_client::{
    Client, ClientConfig, Compression, ConnectionConfig, FetchOptions, NewTopic, OffsetSpec,
    ProduceOptions, ProducerIdentity, ProducerRecord,
};
use support::history::{History, Log};
use support::Node;

const DEFAULT_SEED: u64 = 0x5EED_2026;
const DEFAULT_ROUNDS: usize = 3;
const NODES: usize = 3;
const TOPIC: &str = "history";
const PARTITIONS: i32 = 3;
/// Writers per partition (each its own producer, one batch in flight).
const WRITERS: usize = 3;
/// Pause between one writer's sends (bounds the history's size).
const SEND_EVERY: Duration = Duration::from_millis(2);
/// Bound on one send, retries included; past it the send is indeterminate.
const SEND_TIMEOUT: Duration = Duration::from_secs(15);

/// Cluster settings, as tests/clients/python/cluster.py has them (but the lag time).
const CONFIG: &[(&str, &str)] = &[
    ("default.replication.factor", "3"),
    ("min.insync.replicas", "2"),
    ("offsets.topic.replication.factor", "3"),
    ("transaction.state.log.replication.factor", "3"),
    ("broker.session.timeout.ms", "3000"),
    ("broker.heartbeat.interval.ms", "500"),
    // Shorter than cluster.py's 5000, so that a stall shrinks the ISR.
    ("replica.lag.time.max.ms", "1000"),
    ("group.initial.rebalance.delay.ms", "0"),
];

/// What a fault does to its nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// The node crashes (its runtime is dropped) and restarts on its data dir.
    Crash,
    /// The node's REPLICATION listener stalls (its proxy holds every byte): followers
    /// of its partitions stop fetching, its own inter-broker requests hang, while
    /// clients and the quorum still reach it.
    Stall,
    /// A stall for the first half of the fault, then a crash while stalled (a leader
    /// whose followers fell out of its ISR dies), then a restart.
    StallThenCrash,
}

/// One fault: after `up` of normal running, `kind` happens to the `nodes` (indexes)
/// for `down`, then they are back.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fault {
    up: Duration,
    kind: Kind,
    nodes: Vec<usize>,
    down: Duration,
}

/// The fault schedule: a pure function of the seed. One fault in six is a stall, one
/// a stall then a crash, the others crashes; mostly of one node at a time (the cluster keeps a quorum and
/// `min.insync.replicas`), one in four takes two nodes together (no quorum, or no
/// replica to meet `min.insync.replicas`: writes fail or wait until they are back).
fn schedule(seed: u64, rounds: usize) -> Vec<Fault> {
    let mut rng = runnel_core::rng::SplitMix64::new(seed);
    (0..rounds)
        .map(|_| {
            let up = Duration::from_millis(rng.range(300, 1_500));
            let kind = match rng.range(0, 6) {
                0 => Kind::Stall,
                1 => Kind::StallThenCrash,
                _ => Kind::Crash,
            };
            let first = rng.range(0, NODES as u64) as usize;
            let mut nodes = vec![first];
            if rng.range(0, 4) == 0 {
                nodes.push((first + rng.range(1, NODES as u64) as usize) % NODES);
            }
            let down = Duration::from_millis(rng.range(200, 2_000));
            Fault {
                up,
                kind,
                nodes,
                down,
            }
        })
        .collect()
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v}: not a number")),
        Err(_) => default,
    }
}

fn client_config() -> ClientConfig {
    ClientConfig {
        connection: ConnectionConfig {
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(5),
            ..ConnectionConfig::default()
        },
        retries: 60,
        retry_backoff: Duration::from_millis(100),
        allow_auto_create_topics: false,
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A new idempotent producer id, retried while the cluster cannot give one.
async fn producer_id(client: &Client, stop: &AtomicBool) -> Option<ProducerIdentity> {
    loop {
        match client.init_producer_id().await {
            Ok(p) => return Some(p),
            Err(_) if !stop.load(Ordering::Relaxed) => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(_) => return None,
        }
    }
}

/// One writer: values "w<writer>-<seq>" to `partition` until `stop`.
async fn writer(
    bootstrap: String,
    w: usize,
    partition: i32,
    history: Arc<History>,
    stop: Arc<AtomicBool>,
) {
    let client = loop {
        match Client::connect(&bootstrap, client_config()).await {
            Ok(c) => break c,
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    let options = ProduceOptions {
        acks: -1,
        timeout_ms: 5_000,
        compression: Compression::None,
    };
    let Some(mut producer) = producer_id(&client, &stop).await else {
        return;
    };
    let mut sequence = 0i32;
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let value = format!("w{w}-{seq}");
        history.note_sent(&value, w, seq);
        let identity = ProducerIdentity {
            base_sequence: sequence,
            ..producer
        };
        let batch = runnel_client::records::encode_batch(
            &[ProducerRecord::value(value.clone())],
            Compression::None,
            Some(identity),
            now_ms(),
        )
        .expect("one record encodes");
        let sent = tokio::time::timeout(SEND_TIMEOUT, async {
            // As a Kafka producer does until its delivery timeout: the same batch (same
            // sequence) again while the error may pass, a refused connection included
            // (a crashed leader stays in the metadata until the controller fences it).
            loop {
                match client
                    .produce_batch(TOPIC, partition, batch.clone(), &options)
                    .await
                {
                    Err(e)
                        if e.is_retriable()
                            || matches!(e, runnel_client::Error::Connect { .. }) =>
                    {
                        tokio::time::sleep(Duration::from_millis(100)).await
                    }
                    done => return done,
                }
            }
        })
        .await;
        match sent {
            Ok(Ok(ack)) => {
                let offset = ack.base_offset.expect("acks=all answers an offset");
                history.note_acked(&value, partition, offset);
                sequence += 1;
            }
            failed => {
                let why = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => format!("no answer within {SEND_TIMEOUT:?}"),
                };
                history.note_failed(&value, why);
                // The batch may still land: a new producer id, so that the next
                // sequences do not depend on it.
                match producer_id(&client, &stop).await {
                    Some(p) => producer = p,
                    None => return,
                }
                sequence = 0;
            }
        }
        seq += 1;
        tokio::time::sleep(SEND_EVERY).await;
    }
}

/// Every record of every partition, read up to the high watermark each partition has
/// when its read starts.
async fn read_back(client: &Client) -> Log {
    let mut log = Log::new();
    let options = FetchOptions {
        max_wait_ms: 100,
        ..FetchOptions::default()
    };
    for p in 0..PARTITIONS {
        let end = client
            .list_offsets(TOPIC, &[p], OffsetSpec::Latest)
            .await
            .unwrap_or_else(|e| panic!("the end of partition {p}: {e}"))[0]
            .offset;
        let records = log.entry(p).or_default();
        let mut offset = 0;
        let deadline = Instant::now() + Duration::from_secs(60);
        while offset < end {
            assert!(
                Instant::now() < deadline,
                "partition {p}: read to {offset} of {end}"
            );
            let f = match client.fetch(TOPIC, p, offset, &options).await {
                Ok(f) => f,
                Err(e) if e.is_retriable() => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                Err(e) => panic!("read back partition {p} at {offset}: {e}"),
            };
            for r in f.records.into_iter().filter(|r| r.offset < end) {
                let value = r.value.as_deref().unwrap_or_default();
                records.push((r.offset, String::from_utf8_lossy(value).into_owned()));
            }
            offset = f.next_offset.max(offset);
        }
    }
    log
}

/// Starts (or restarts) `nodes` together: a node waits for the quorum, which may need
/// the others.
fn start(nodes: &mut [Node], which: &[usize]) {
    std::thread::scope(|s| {
        for (i, n) in nodes.iter_mut().enumerate() {
            if which.contains(&i) {
                s.spawn(|| n.start());
            }
        }
    });
}

#[test]
fn seeded_crashes_lose_no_acknowledged_write() {
    let seed = env_or("RUNNEL_SIM_SEED", DEFAULT_SEED);
    let rounds = env_or("RUNNEL_SIM_ROUNDS", DEFAULT_ROUNDS);
    let faults = schedule(seed, rounds);
    let reproduce = format!("RUNNEL_SIM_SEED={seed} RUNNEL_SIM_ROUNDS={rounds}");
    eprintln!("sim: {reproduce}; faults {faults:?}");
    let began = Instant::now();

    let dir = tempfile::tempdir().expect("a temp dir");
    let mut nodes = support::cluster(
        NODES,
        dir.path(),
        CONFIG,
        Arc::new(runnel_core::SystemClock),
    );
    let proxies = support::replication_proxies(&mut nodes);
    let all: Vec<usize> = (0..NODES).collect();
    start(&mut nodes, &all);
    let bootstrap = nodes.iter().map(Node::addr).collect::<Vec<_>>().join(",");

    let clients = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime for the clients");
    clients.block_on(async {
        let client = Client::connect(&bootstrap, client_config()).await.unwrap();
        client
            .create_topic(&NewTopic {
                name: TOPIC.into(),
                partitions: PARTITIONS,
                replication_factor: NODES as i16,
                configs: vec![],
            })
            .await
            .unwrap();
    });

    let history = Arc::new(History::default());
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..WRITERS * PARTITIONS as usize)
        .map(|w| {
            let partition = (w % PARTITIONS as usize) as i32;
            let run = writer(
                bootstrap.clone(),
                w,
                partition,
                history.clone(),
                stop.clone(),
            );
            clients.spawn(run)
        })
        .collect();

    for (i, f) in faults.iter().enumerate() {
        std::thread::sleep(f.up);
        let ids: Vec<usize> = f.nodes.iter().map(|n| n + 1).collect();
        eprintln!(
            "sim: fault {i}: {:?} nodes {ids:?} at {:?}",
            f.kind,
            began.elapsed()
        );
        match f.kind {
            Kind::Crash => {
                for &n in &f.nodes {
                    nodes[n].crash();
                }
                std::thread::sleep(f.down);
                start(&mut nodes, &f.nodes);
            }
            Kind::Stall => {
                for &n in &f.nodes {
                    proxies[n].freeze(true);
                }
                std::thread::sleep(f.down);
                for &n in &f.nodes {
                    proxies[n].freeze(false);
                }
            }
            Kind::StallThenCrash => {
                for &n in &f.nodes {
                    proxies[n].freeze(true);
                }
                std::thread::sleep(f.down / 2);
                for &n in &f.nodes {
                    nodes[n].crash();
                    proxies[n].freeze(false);
                }
                std::thread::sleep(f.down / 2);
                start(&mut nodes, &f.nodes);
            }
        }
        eprintln!("sim: fault {i}: over at {:?}", began.elapsed());
    }
    // Let the writers see the whole cluster once more, then stop them.
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    clients.block_on(async {
        for w in writers {
            tokio::time::timeout(SEND_TIMEOUT * 3, w)
                .await
                .expect("the writers stop")
                .expect("a writer panicked");
        }
    });

    let log = clients.block_on(async {
        let client = Client::connect(&bootstrap, client_config()).await.unwrap();
        read_back(&client).await
    });
    let anomalies = history.check(&log);
    let (sent, acked, indeterminate) = history.counts();
    let summary = format!(
        "sent {sent}, acknowledged {acked}, indeterminate {indeterminate}, read back {} \
         in {:?}",
        log.values().map(Vec::len).sum::<usize>(),
        began.elapsed()
    );
    eprintln!("sim: {summary}");
    eprintln!(
        "sim: some indeterminate sends: {:?}",
        history.some_failures(8)
    );
    assert!(
        anomalies.is_empty(),
        "{reproduce}: {}\n{summary}\nsome indeterminate sends: {:?}",
        anomalies.describe(),
        history.some_failures(5)
    );
    // A run where nothing was acknowledged checks nothing.
    assert!(
        acked > 0,
        "{reproduce}: no write was acknowledged ({summary})"
    );
}

#[test]
fn the_schedule_is_a_pure_function_of_the_seed() {
    assert_eq!(schedule(7, 20), schedule(7, 20));
    assert_ne!(schedule(7, 20), schedule(8, 20));
    let many = schedule(7, 200);
    assert!(many.iter().any(|f| f.kind == Kind::Stall));
    assert!(many.iter().any(|f| f.kind == Kind::StallThenCrash));
    assert!(many.iter().any(|f| f.kind == Kind::Crash));
    for f in many {
        assert!(!f.nodes.is_empty() && f.nodes.len() <= 2);
        assert!(f.nodes.iter().all(|n| *n < NODES));
        if f.nodes.len() == 2 {
            assert_ne!(f.nodes[0], f.nodes[1]);
        }
    }
}
