//! The controller over a 3-voter quorum: brokers, fencing, shutdown, placement, ISR changes.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use runnel_meta::{ControllerClient, ErrorKind, MetaConfig, NewTopic, NO_LEADER};

fn short_sessions(cfg: &mut MetaConfig) {
    // Long enough that a loaded machine does not fence the brokers that do heartbeat.
    cfg.broker_session_timeout = Duration::from_millis(2500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_misses_heartbeats_is_fenced_and_its_partitions_move() {
    run(3, short_sessions, |c| async move {
        let client = Arc::new(c.client());
        let stops: Vec<_> = live_brokers(&client, &[1, 2, 3])
            .await
            .into_iter()
            .map(|(_, s)| s)
            .collect();
        create(&client, "t", 6, 3).await;
        let before = c.wait_all(|i| i.topics.contains_key("t")).await[0].clone();
        assert!(before.topics["t"].partitions.iter().any(|p| p.leader == 2));
        // Broker 2 stops heartbeating.
        let _ = stops[1].send(true);
        let after = wait_image(c.node(0).image(), |i| i.brokers[&2].fenced).await;
        for (n, p) in after.topics["t"].partitions.iter().enumerate() {
            let old = &before.topics["t"].partitions[n];
            assert!(!p.isr.contains(&2), "partition {n}: {p:?}");
            assert_ne!(p.leader, 2);
            if old.leader == 2 {
                // The first replica in replica order that is live and in the ISR.
                let want = old.replicas.iter().copied().find(|r| *r != 2).unwrap();
                assert_eq!(p.leader, want, "partition {n}: {old:?} -> {p:?}");
                assert_eq!(p.leader_epoch, old.leader_epoch + 1);
            } else {
                assert_eq!(p.leader, old.leader);
                assert_eq!(p.leader_epoch, old.leader_epoch);
            }
            assert_eq!(p.partition_epoch, old.partition_epoch + 1);
        }
        // The others stay live.
        assert!(!after.brokers[&1].fenced && !after.brokers[&3].fenced);
        // Broker 2 comes back: a heartbeat unfences it.
        let epoch = after.brokers[&2].epoch;
        let hb = client.heartbeat(2, epoch, false).await.unwrap();
        assert!(!hb.fenced);
        wait_image(c.node(0).image(), |i| !i.brokers[&2].fenced).await;
        for s in stops {
            let _ = s.send(true);
        }
        c
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_isr_member_fenced_leaves_the_partition_offline_until_it_returns() {
    run(3, short_sessions, |c| async move {
        let client = Arc::new(c.client());
        let (e1, s1) = live_broker(client.clone(), 1, None).await;
        create(&client, "solo", 1, 1).await;
        let _ = s1.send(true);
        let img = wait_image(c.node(1).image(), |i| i.brokers[&1].fenced).await;
        let p = img.partition("solo", 0).unwrap();
        assert_eq!((p.leader, p.isr.clone()), (NO_LEADER, vec![1]));
        client.heartbeat(1, e1, false).await.unwrap();
        let img = wait_image(c.node(1).image(), |i| {
            i.partition("solo", 0).unwrap().leader == 1
        })
        .await;
        let p = img.partition("solo", 0).unwrap();
        assert_eq!(p.leader_epoch, 2);
        c
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controlled_shutdown_moves_leadership_first() {
    run(3, no_tweak, |c| async move {
        let client = Arc::new(c.client());
        let live = live_brokers(&client, &[1, 2, 3]).await;
        create(&client, "t", 6, 2).await;
        c.wait_all(|i| i.topics.contains_key("t")).await;
        let _ = live[2].1.send(true);
        let reply = client.heartbeat(3, live[2].0, true).await.unwrap();
        assert!(reply.shutdown_ready);
        let img = c.wait_all(|i| i.brokers[&3].fenced).await;
        for p in &img[0].topics["t"].partitions {
            assert_ne!(p.leader, 3, "{p:?}");
            assert!(!p.isr.contains(&3), "{p:?}");
            assert!(p.leader != NO_LEADER);
        }
        c
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_controller_gives_brokers_a_fresh_session() {
    run(3, short_sessions, |mut c| async move {
        let client = Arc::new(c.client());
        let (_e, _s) = live_broker(client.clone(), 1, None).await;
        let old = c.wait_leader().await;
        c.stop(c.index_of(old)).await;
        c.wait_leader().await;
        // The broker keeps heartbeating through the failover and stays unfenced.
        tokio::time::sleep(Duration::from_millis(3000)).await;
        let img = c.wait_all(|_| true).await;
        assert!(!img[0].brokers[&1].fenced);
        c
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placement_spreads_replicas_over_racks() {
    run(3, no_tweak, |c| async move {
        let client = Arc::new(c.client());
        let mut live = Vec::new();
        for (id, rack) in [(1, "a"), (2, "a"), (3, "b"), (4, "b"), (5, "c"), (6, "c")] {
            live.push(live_broker(client.clone(), id, Some(rack)).await);
        }
        create(&client, "r", 12, 3).await;
        let img = c.wait_all(|i| i.topics.contains_key("r")).await;
        let rack = |b: &i32| img[0].brokers[b].rack.clone();
        for p in &img[0].topics["r"].partitions {
            let racks: std::collections::BTreeSet<_> = p.replicas.iter().map(rack).collect();
            assert_eq!(racks.len(), 3, "{p:?}");
        }
        let e = client.create_topics(vec![topic("big", 1, 7)], false).await[0]
            .clone()
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidReplicationFactor);
        assert!(e.message.contains('7') && e.message.contains('6'), "{e}");
        // validate_only writes nothing.
        assert!(client.create_topics(vec![topic("dry", 1, 1)], true).await[0].is_ok());
        client.create_partitions("r", 14, None).await.unwrap();
        let img = c.wait_all(|i| i.topics["r"].partitions.len() == 14).await;
        assert!(!img[0].topics.contains_key("dry"));
        c
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alter_partition_refuses_stale_epochs_and_reassignment_completes() {
    run(3, no_tweak, |c| async move {
        let client = Arc::new(c.client());
        let live = live_brokers(&client, &[1, 2, 3]).await;
        let epoch = |id: i32| live[id as usize - 1].0;
        let tid = client
            .create_topics(
                vec![NewTopic {
                    name: "t".into(),
                    num_partitions: -1,
                    replication_factor: -1,
                    assignments: Some(vec![vec![1, 2]]),
                    ..Default::default()
                }],
                false,
            )
            .await[0]
            .clone()
            .unwrap();
        // The leader shrinks the ISR.
        let p = client
            .alter_partition(1, epoch(1), tid, 0, 0, 0, vec![1])
            .await
            .unwrap();
        assert_eq!((p.isr.clone(), p.partition_epoch), (vec![1], 1));
        // The same request again: stale partition epoch.
        let e = client
            .alter_partition(1, epoch(1), tid, 0, 0, 0, vec![1])
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidUpdateVersion);
        let e = client
            .alter_partition(1, epoch(1), tid, 0, 3, 1, vec![1, 2])
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::FencedLeaderEpoch);
        let e = client
            .alter_partition(2, epoch(2), tid, 0, 0, 1, vec![2])
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotLeaderOrFollower);
        let e = client
            .alter_partition(1, epoch(1) + 100, tid, 0, 0, 1, vec![1])
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::StaleBrokerEpoch);
        // Reassign to [3, 1]: 3 is added; it completes once 3 is in the ISR.
        client.reassign("t", 0, Some(vec![3, 1])).await.unwrap();
        let img = c.wait_all(|i| i.reassignments().count() == 1).await;
        let p = img[0].partition("t", 0).unwrap().clone();
        assert_eq!(p.replicas, vec![3, 1, 2]);
        let done = client
            .alter_partition(
                1,
                epoch(1),
                tid,
                0,
                p.leader_epoch,
                p.partition_epoch,
                vec![1, 3],
            )
            .await
            .unwrap();
        assert_eq!((done.replicas.clone(), done.leader), (vec![3, 1], 1));
        let img = c.wait_all(|i| i.reassignments().count() == 0).await;
        // Preferred election moves leadership to 3.
        let res = client
            .elect_leaders(Some(vec![("t".into(), 0)]), true)
            .await;
        assert!(res[0].1.is_ok(), "{res:?}");
        c.wait_all(|i| i.partition("t", 0).unwrap().leader == 3)
            .await;
        let e = client.reassign("t", 0, None).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::NoReassignmentInProgress);
        drop(img);
        c
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_voter_watches_the_image_and_configs_change() {
    run(3, no_tweak, |c| async move {
        let client = Arc::new(c.client());
        let watcher = ControllerClient::new(c.voters.clone());
        let first = watcher.watch_image();
        let (_e, _s) = live_broker(client.clone(), 1, None).await;
        create(&client, "w", 1, 1).await;
        let mut cfg = std::collections::BTreeMap::new();
        cfg.insert("retention.ms".to_string(), "1000".to_string());
        client.alter_topic_configs("w", cfg.clone()).await.unwrap();
        let img = wait_image(first, |i| {
            i.topics.get("w").is_some_and(|t| t.configs == cfg)
        })
        .await;
        assert!(img.cluster_id.is_some());
        let e = client.alter_topic_configs("nope", cfg).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::UnknownTopicOrPartition);
        assert_eq!(e.kind.kafka_code(), 3);
        let mut broker_cfg = std::collections::BTreeMap::new();
        broker_cfg.insert("log.retention.ms".to_string(), Some("5".to_string()));
        client
            .alter_broker_configs(broker_cfg.clone())
            .await
            .unwrap();
        let rx = watcher.watch_image();
        wait_image(rx.clone(), |i| {
            i.broker_configs.get("log.retention.ms").map(String::as_str) == Some("5")
        })
        .await;
        broker_cfg.insert("log.retention.ms".to_string(), None);
        client.alter_broker_configs(broker_cfg).await.unwrap();
        wait_image(rx, |i| i.broker_configs.is_empty()).await;
        c
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_a_quorum_times_out_naming_the_voters() {
    run(3, no_tweak, |mut c| async move {
        c.wait_leader().await;
        c.stop(0).await;
        c.stop(1).await;
        let client = c.client().with_timeout(Duration::from_millis(1500));
        let e = client
            .register_broker(1, "h", 1, Vec::new(), None, uuid::Uuid::new_v4())
            .await
            .unwrap_err();
        assert!(
            matches!(e.kind, ErrorKind::Timeout | ErrorKind::Unavailable),
            "{e:?}"
        );
        assert!(
            e.message.contains(&c.voters[0].1.to_string()) || e.kind == ErrorKind::Unavailable,
            "{e}"
        );
        c
    })
    .await;
}

fn fast_rebalance(cfg: &mut MetaConfig) {
    cfg.auto_leader_rebalance = true;
    cfg.leader_imbalance_check_interval = Duration::from_millis(300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_returns_to_the_preferred_replica_automatically() {
    run(3, fast_rebalance, |c| async move {
        let client = Arc::new(c.client());
        let live = live_brokers(&client, &[1, 2, 3]).await;
        let epoch = |id: i32| live[id as usize - 1].0;
        let tid = client
            .create_topics(
                vec![NewTopic {
                    name: "p".into(),
                    num_partitions: -1,
                    replication_factor: -1,
                    assignments: Some(vec![vec![1, 2, 3]]),
                    ..Default::default()
                }],
                false,
            )
            .await[0]
            .clone()
            .unwrap();
        // Broker 1 shuts down (controlled): 2 leads, 1 leaves the ISR.
        assert!(
            client
                .heartbeat(1, epoch(1), true)
                .await
                .unwrap()
                .shutdown_ready
        );
        let img = c
            .wait_all(|i| i.partition("p", 0).is_some_and(|p| p.leader == 2))
            .await;
        let p = img[0].partition("p", 0).unwrap().clone();
        assert_eq!(p.isr, vec![2, 3]);
        // It comes back; no automatic move while it is out of the ISR.
        assert!(!client.heartbeat(1, epoch(1), false).await.unwrap().fenced);
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert_eq!(
            c.node(0).image().borrow().partition("p", 0).unwrap().leader,
            2
        );
        // The leader adds it back to the ISR; the rebalance check moves leadership to it.
        client
            .alter_partition(
                2,
                epoch(2),
                tid,
                0,
                p.leader_epoch,
                p.partition_epoch,
                vec![2, 3, 1],
            )
            .await
            .unwrap();
        let img = c
            .wait_all(|i| i.partition("p", 0).is_some_and(|p| p.leader == 1))
            .await;
        assert_eq!(
            img[0].partition("p", 0).unwrap().leader_epoch,
            p.leader_epoch + 1
        );
        c
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_quorum_reports_the_leader_and_every_voters_progress() {
    run(
        3,
        |_| {},
        |c| async move {
            let client = Arc::new(c.client());
            // A registered broker-only node would be an observer; these are all voters.
            let _live = live_brokers(&client, &[1, 2, 3]).await;
            let q = client.describe_quorum().await.unwrap();
            assert!((1..=3).contains(&q.leader), "{q:?}");
            assert!(q.epoch >= 1 && q.high_watermark > 0, "{q:?}");
            let mut ids: Vec<i32> = q.voters.iter().map(|v| v.id).collect();
            ids.sort_unstable();
            assert_eq!(ids, vec![1, 2, 3]);
            assert!(q.observers.is_empty(), "{q:?}");
            let leader = q.voters.iter().find(|v| v.id == q.leader).unwrap();
            assert!(leader.log_end_offset >= q.high_watermark, "{q:?}");
            c
        },
    )
    .await;
}

fn long_sessions(cfg: &mut MetaConfig) {
    cfg.broker_session_timeout = Duration::from_secs(30);
}

/// A peer broker reports that a replica fetch connection to or from broker 7 ended: the
/// controller probes 7's port and, finding it refused (the process is gone), fences it at
/// once instead of after the 30 s session. A broker whose port accepts stays as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_reported_closed_connection_fences_a_broker_whose_port_refuses() {
    run(3, long_sessions, |c| async move {
        let client = Arc::new(c.client());
        let register = |id: i32, port: u16| {
            let client = client.clone();
            async move {
                let epoch = client
                    .register_broker(
                        id,
                        "127.0.0.1",
                        port as i32,
                        Vec::new(),
                        None,
                        uuid::Uuid::new_v4(),
                    )
                    .await
                    .unwrap();
                assert!(!client.heartbeat(id, epoch, false).await.unwrap().fenced);
                epoch
            }
        };
        let alive = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let alive_epoch = register(8, alive.local_addr().unwrap().port()).await;
        // A port nobody listens on any more: bound, then released.
        let gone = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let gone_port = gone.local_addr().unwrap().port();
        drop(gone);
        let gone_epoch = register(7, gone_port).await;

        let started = std::time::Instant::now();
        client.peer_closed(8, alive_epoch).await.unwrap();
        client.peer_closed(7, gone_epoch).await.unwrap();
        let after = wait_image(c.node(0).image(), |i| i.brokers[&7].fenced).await;
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
        assert!(!after.brokers[&8].fenced);
        // The live one's probes (all accepted) end within 170 ms: still not fenced.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!c.node(0).image().borrow().brokers[&8].fenced);
        drop(alive);
        c
    })
    .await;
}
