//! The coordinators' and the ISR check's timeouts on a controllable clock: in-process
//! brokers on temp dirs whose clock is a `ManualClock`, driven through the wire. A
//! timeout of seconds runs in milliseconds of test time: the test advances the clock,
//! and the broker's own background timers (which keep running in real time) act on it.
//! Each case also checks that nothing happens while only real time passes.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    DescribeGroupsRequest, GroupId, HeartbeatRequest, JoinGroupRequest, JoinGroupResponse,
    SyncGroupRequest,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use runnel_broker::coordinators::txn::TxnState;
use runnel_client::{
    Client, ClientConfig, Connection, ConnectionConfig, Error, FetchOptions, NewTopic,
    ProduceOptions, ProducerRecord,
};
use runnel_core::ManualClock;
use support::Node;

/// Real time the tests let pass to show that a timer does not fire on real time (the
/// timers tick every 20-100 ms).
const REAL_PAUSE: Duration = Duration::from_millis(400);

/// Bound on waiting for a timer to act once test time has passed its deadline.
const ACT_WITHIN: Duration = Duration::from_secs(10);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime for the test's clients")
}

/// A lone broker on a temp dir with a manual clock.
fn lone_node(config: &[(&str, &str)]) -> (Node, Arc<ManualClock>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("a temp dir");
    let clock = Arc::new(ManualClock::new());
    let mut node = Node::lone(dir.path().join("data"), config, clock.clone());
    node.start();
    (node, clock, dir)
}

fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn kafka_error(e: &Error) -> Option<ResponseError> {
    match e {
        Error::Kafka { error, .. } => Some(*error),
        _ => None,
    }
}

/// Polls `probe` every 20 ms until `done` holds for its answer, which it returns;
/// panics after `ACT_WITHIN` naming `what` and the last answer.
async fn until<T: std::fmt::Debug, F: std::future::Future<Output = T>>(
    what: &str,
    mut probe: impl FnMut() -> F,
    done: impl Fn(&T) -> bool,
) -> T {
    let deadline = Instant::now() + ACT_WITHIN;
    loop {
        let answer = probe().await;
        if done(&answer) {
            return answer;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {ACT_WITHIN:?}; still {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The state of transactional id `tid`, waited for until it is `want`.
async fn txn_state_until(broker: &runnel_broker::Broker, tid: &str, want: TxnState) {
    let state = || async { broker.txns.describe(tid).map(|m| m.state) };
    until(&format!("{tid} reaches {want:?}"), state, |s| {
        *s == Some(want)
    })
    .await;
}

#[test]
fn a_transaction_past_its_timeout_is_aborted_in_test_time_and_its_producer_fenced() {
    let (node, clock, _dir) = lone_node(&[(
        "transaction.abort.timed.out.transaction.cleanup.interval.ms",
        "20",
    )]);
    let broker = node.broker();
    runtime().block_on(async {
        let client = Client::connect(&node.addr(), ClientConfig::default())
            .await
            .unwrap();
        client
            .create_topic(&NewTopic {
                name: "t".into(),
                partitions: 1,
                replication_factor: 1,
                configs: vec![],
            })
            .await
            .unwrap();
        let timeout_ms = 60_000;
        let mut late = runnel_client::txn::TransactionalProducer::init(&client, "late", timeout_ms)
            .await
            .unwrap();
        let mut prompt =
            runnel_client::txn::TransactionalProducer::init(&client, "prompt", timeout_ms)
                .await
                .unwrap();
        let opts = ProduceOptions::default();
        late.send("t", 0, &[ProducerRecord::value("late-1")], &opts)
            .await
            .unwrap();
        let epoch = broker.txns.describe("late").unwrap().producer_epoch;

        // Real time alone never times a transaction out.
        tokio::time::sleep(REAL_PAUSE).await;
        assert_eq!(
            broker.txns.describe("late").unwrap().state,
            TxnState::Ongoing
        );

        // `prompt` starts 59 s (test time) into `late`'s transaction, so it stays within
        // its timeout when `late` passes its own.
        clock.advance(Duration::from_millis(59_000));
        prompt
            .send("t", 0, &[ProducerRecord::value("prompt-1")], &opts)
            .await
            .unwrap();
        clock.advance(Duration::from_millis(1_001));
        txn_state_until(&broker, "late", TxnState::CompleteAbort).await;
        let after = broker.txns.describe("late").unwrap();
        assert_eq!(after.producer_epoch, epoch + 1, "the abort bumps the epoch");

        // The old producer is fenced: EndTxn with its epoch is PRODUCER_FENCED, a produce
        // INVALID_PRODUCER_EPOCH (as in Kafka).
        let end = late.end(true).await.unwrap_err();
        assert_eq!(
            kafka_error(&end),
            Some(ResponseError::ProducerFenced),
            "{end}"
        );
        let send = late
            .send("t", 0, &[ProducerRecord::value("late-2")], &opts)
            .await
            .unwrap_err();
        assert_eq!(
            kafka_error(&send),
            Some(ResponseError::InvalidProducerEpoch),
            "{send}"
        );

        // The transaction within its timeout is untouched and commits.
        assert_eq!(
            broker.txns.describe("prompt").unwrap().state,
            TxnState::Ongoing
        );
        prompt.end(true).await.unwrap();
        txn_state_until(&broker, "prompt", TxnState::CompleteCommit).await;

        // A read_committed consumer sees the committed record, not the aborted one.
        let committed = FetchOptions {
            isolation_level: 1,
            max_wait_ms: 0,
            ..FetchOptions::default()
        };
        let mut values = Vec::new();
        let mut offset = 0;
        read_until_the_markers(&client, &committed, &mut offset, &mut values).await;
        assert_eq!(values, vec!["prompt-1".to_string()]);
    });
}

/// Reads partition 0 of "t" with `options` up to its last stable offset (the commit
/// marker included), collecting values.
async fn read_until_the_markers(
    client: &Client,
    options: &FetchOptions,
    offset: &mut i64,
    values: &mut Vec<String>,
) {
    let deadline = Instant::now() + ACT_WITHIN;
    loop {
        let f = client.fetch("t", 0, *offset, options).await.unwrap();
        for r in &f.records {
            values.push(String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into());
        }
        *offset = f.next_offset;
        // Two records and two markers (late's abort, prompt's commit): the stable offset
        // reaches the end once the commit marker is written.
        if *offset >= 4 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "read back only to offset {offset}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---- classic consumer groups -------------------------------------------------------

const GROUP: &str = "g";

/// A member of a classic group, speaking JoinGroup/SyncGroup/Heartbeat itself.
struct Member {
    conn: Connection,
    id: String,
    generation: i32,
}

const JOIN_VERSION: i16 = 5;

fn join_request(member_id: &str, session_ms: i32, rebalance_ms: i32) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(GroupId(sb(GROUP)))
        .with_session_timeout_ms(session_ms)
        .with_rebalance_timeout_ms(rebalance_ms)
        .with_member_id(sb(member_id))
        .with_protocol_type(sb("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(sb("range"))
            .with_metadata(Bytes::from_static(b"\0\0\0\0\0\0"))])
}

/// JoinGroup as a new member: the first join answers MEMBER_ID_REQUIRED with the id to
/// join with (KIP-394); returns the id and the second join's (pending) future.
async fn join(
    conn: &Connection,
    session_ms: i32,
    rebalance_ms: i32,
) -> (String, impl std::future::Future<Output = JoinGroupResponse>) {
    let first = conn
        .send(&join_request("", session_ms, rebalance_ms), JOIN_VERSION)
        .await
        .unwrap();
    assert_eq!(first.error_code, ResponseError::MemberIdRequired.code());
    let id = first.member_id.to_string();
    let conn = conn.clone();
    let request = join_request(&id, session_ms, rebalance_ms);
    (id, async move {
        conn.send(&request, JOIN_VERSION).await.unwrap()
    })
}

/// A connection of its own to the group's coordinator: a parked JoinGroup holds back
/// the answers to every later request on its connection (answers go in request order).
async fn coordinator_connection(client: &Client) -> Connection {
    let shared = client.group_coordinator(GROUP).await.unwrap();
    Connection::connect(shared.addr(), &ConnectionConfig::default())
        .await
        .unwrap()
}

/// Joins as the group's only member and syncs (the group is then Stable).
async fn join_alone(client: &Client, session_ms: i32, rebalance_ms: i32) -> Member {
    let conn = coordinator_connection(client).await;
    let (id, joined) = join(&conn, session_ms, rebalance_ms).await;
    let joined = joined.await;
    assert_eq!(joined.error_code, 0);
    assert_eq!(joined.leader.as_str(), id);
    let sync = SyncGroupRequest::default()
        .with_group_id(GroupId(sb(GROUP)))
        .with_generation_id(joined.generation_id)
        .with_member_id(sb(&id))
        .with_protocol_type(Some(sb("consumer")))
        .with_protocol_name(Some(sb("range")))
        .with_assignments(vec![SyncGroupRequestAssignment::default()
            .with_member_id(sb(&id))
            .with_assignment(Bytes::new())]);
    let synced = conn.send(&sync, 3).await.unwrap();
    assert_eq!(synced.error_code, 0);
    Member {
        conn,
        id,
        generation: joined.generation_id,
    }
}

impl Member {
    async fn heartbeat(&self) -> i16 {
        let request = HeartbeatRequest::default()
            .with_group_id(GroupId(sb(GROUP)))
            .with_generation_id(self.generation)
            .with_member_id(sb(&self.id));
        self.conn.send(&request, 3).await.unwrap().error_code
    }
}

/// The group's state and member ids, from DescribeGroups.
async fn describe(conn: &Connection) -> (String, Vec<String>) {
    let request = DescribeGroupsRequest::default().with_groups(vec![GroupId(sb(GROUP))]);
    let r = conn.send(&request, 4).await.unwrap();
    let g = &r.groups[0];
    assert_eq!(g.error_code, 0);
    let mut members: Vec<String> = g.members.iter().map(|m| m.member_id.to_string()).collect();
    members.sort();
    (g.group_state.to_string(), members)
}

const GROUP_CONFIG: &[(&str, &str)] = &[("group.initial.rebalance.delay.ms", "0")];

#[test]
fn a_member_that_does_not_rejoin_is_removed_after_the_rebalance_timeout_of_test_time() {
    let (node, clock, _dir) = lone_node(GROUP_CONFIG);
    runtime().block_on(async {
        let client = Client::connect(&node.addr(), ClientConfig::default())
            .await
            .unwrap();
        // The session outlasts the rebalance: only the rebalance timeout can remove `a`.
        let (session_ms, rebalance_ms) = (60_000, 10_000);
        let a = join_alone(&client, session_ms, rebalance_ms).await;
        let b_conn = coordinator_connection(&client).await;
        let (b, b_joined) = join(&b_conn, session_ms, rebalance_ms).await;
        let b_joined = tokio::spawn(b_joined);

        // `a` does not rejoin; the join waits for it through real time and through test
        // time short of the rebalance timeout.
        tokio::time::sleep(REAL_PAUSE).await;
        clock.advance(Duration::from_millis(rebalance_ms as u64 - 1_000));
        tokio::time::sleep(REAL_PAUSE).await;
        assert!(
            !b_joined.is_finished(),
            "the join completed before the rebalance timeout"
        );
        assert_eq!(describe(&a.conn).await.0, "PreparingRebalance");

        clock.advance(Duration::from_millis(1_001));
        let joined = tokio::time::timeout(ACT_WITHIN, b_joined)
            .await
            .expect("the join completes once the rebalance timeout passed")
            .unwrap();
        assert_eq!(joined.error_code, 0);
        assert_eq!(joined.generation_id, a.generation + 1);
        assert_eq!(joined.leader.as_str(), b);
        let members: Vec<&str> = joined
            .members
            .iter()
            .map(|m| m.member_id.as_str())
            .collect();
        assert_eq!(members, vec![b.as_str()], "`a` was removed from the group");
        assert_eq!(
            a.heartbeat().await,
            ResponseError::UnknownMemberId.code(),
            "the removed member's heartbeat"
        );
    });
}

#[test]
fn a_member_without_heartbeats_is_removed_after_the_session_timeout_of_test_time() {
    let (node, clock, _dir) = lone_node(GROUP_CONFIG);
    runtime().block_on(async {
        let client = Client::connect(&node.addr(), ClientConfig::default())
            .await
            .unwrap();
        let session_ms = 6_000;
        let a = join_alone(&client, session_ms, 30_000).await;
        // A heartbeat within the session keeps the member; real time does not end it.
        clock.advance(Duration::from_millis(5_000));
        assert_eq!(a.heartbeat().await, 0);
        clock.advance(Duration::from_millis(5_000));
        tokio::time::sleep(REAL_PAUSE).await;
        assert_eq!(
            describe(&a.conn).await,
            ("Stable".to_string(), vec![a.id.clone()])
        );

        clock.advance(Duration::from_millis(1_001));
        until(
            "the session timeout removes the member",
            || describe(&a.conn),
            |(state, members)| state == "Empty" && members.is_empty(),
        )
        .await;
        assert_eq!(a.heartbeat().await, ResponseError::UnknownMemberId.code());
    });
}

// ---- ISR -------------------------------------------------------------------------

#[test]
fn a_follower_is_dropped_from_the_isr_after_the_lag_time_of_test_time() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let clock = Arc::new(ManualClock::new());
    let lag_ms = 200u64;
    let lag = lag_ms.to_string();
    let mut nodes = support::cluster(
        3,
        dir.path(),
        &[
            ("replica.lag.time.max.ms", &lag),
            ("min.insync.replicas", "1"),
        ],
        clock.clone(),
    );
    // The followers fetch through proxies: freezing the leader's stalls their fetches
    // while every node stays up and in touch with the controller (a crash would be
    // noticed and fenced at once, shrinking the ISR without the lag check).
    let proxies = support::replication_proxies(&mut nodes);
    std::thread::scope(|s| {
        for n in nodes.iter_mut() {
            s.spawn(|| n.start());
        }
    });
    let bootstrap: Vec<String> = nodes.iter().map(Node::addr).collect();
    runtime().block_on(async {
        let client = Client::connect(&bootstrap.join(","), ClientConfig::default())
            .await
            .unwrap();
        client
            .create_topic(&NewTopic {
                name: "isr".into(),
                partitions: 1,
                replication_factor: 3,
                configs: vec![],
            })
            .await
            .unwrap();
        client
            .produce(
                "isr",
                0,
                &[ProducerRecord::value("x")],
                &ProduceOptions::default(),
            )
            .await
            .unwrap();
        let state = || async {
            let m = client
                .metadata(Some(&["isr".to_string()]), false)
                .await
                .unwrap();
            let p = &m.topics[0].partitions[0];
            (p.leader, p.isr.clone())
        };
        let (leader, isr) = state().await;
        assert_eq!(
            isr.len(),
            3,
            "every replica in sync after an acks=all produce"
        );
        proxies[leader as usize - 1].freeze(true);

        // Real time well past the lag time: the followers stay in the ISR.
        tokio::time::sleep(REAL_PAUSE + Duration::from_millis(4 * lag_ms)).await;
        assert_eq!(state().await, (leader, isr), "the ISR shrank on real time");

        clock.advance(Duration::from_millis(lag_ms + 1));
        until("the ISR shrinks to the leader", state, |(_, isr)| {
            isr == &vec![leader]
        })
        .await;
        proxies[leader as usize - 1].freeze(false);
    });
}
