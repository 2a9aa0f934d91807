use super::*;
use crate::image::TopicImage;

fn broker(id: i32, rack: Option<&str>, fenced: bool) -> BrokerImage {
    BrokerImage {
        id,
        host: "h".into(),
        port: 9000 + id,
        endpoints: Vec::new(),
        rack: rack.map(str::to_string),
        epoch: 10 + id as i64,
        incarnation: Uuid::nil(),
        fenced,
    }
}

/// Brokers 1..=n (live) and topic "t" with the given partitions.
fn image_with(n: i32, partitions: Vec<PartitionImage>) -> ClusterImage {
    let mut img = ClusterImage::default();
    for id in 1..=n {
        img.brokers.insert(id, broker(id, None, false));
    }
    img.topics.insert(
        "t".into(),
        TopicImage {
            name: "t".into(),
            id: Uuid::from_u128(7),
            configs: BTreeMap::new(),
            partitions,
        },
    );
    img
}

fn ap(b: i32, be: i64, t: Uuid, p: i32, le: i32, pe: i32, isr: &[i32]) -> AlterPartitionRequest {
    AlterPartitionRequest::new(b, be, t, p, le, pe, isr.to_vec())
}

fn apply(img: &mut ClusterImage, records: &[MetadataRecord]) {
    let index = img.applied_index + 1;
    for r in records {
        img.apply(index, r);
    }
}

#[test]
fn fencing_moves_leadership_to_the_first_live_isr_replica() {
    let mut img = image_with(
        3,
        vec![
            PartitionImage::new(vec![1, 2, 3]),
            PartitionImage::new(vec![2, 1, 3]),
            PartitionImage {
                isr: vec![1],
                ..PartitionImage::new(vec![1, 3])
            },
        ],
    );
    // Broker 2 is fenced already: partition 0 must skip it.
    img.brokers.get_mut(&2).unwrap().fenced = true;
    let records = fence_broker(&img, 1);
    assert!(matches!(
        records.last(),
        Some(MetadataRecord::FenceBroker { id: 1, epoch: 11 })
    ));
    apply(&mut img, &records);
    let p0 = img.partition("t", 0).unwrap();
    assert_eq!((p0.leader, p0.isr.clone()), (3, vec![2, 3]));
    assert_eq!((p0.leader_epoch, p0.partition_epoch), (1, 1));
    // A follower leaves the ISR; the leader stays; leader epoch unchanged.
    let p1 = img.partition("t", 1).unwrap();
    assert_eq!((p1.leader, p1.isr.clone()), (2, vec![2, 3]));
    assert_eq!((p1.leader_epoch, p1.partition_epoch), (0, 1));
    // The last ISR member stays in the ISR and the partition goes offline.
    let p2 = img.partition("t", 2).unwrap();
    assert_eq!((p2.leader, p2.isr.clone()), (NO_LEADER, vec![1]));
    assert_eq!((p2.leader_epoch, p2.partition_epoch), (1, 1));
    assert!(img.brokers[&1].fenced);
    // Fencing again writes nothing.
    assert!(fence_broker(&img, 1).is_empty());

    // Broker 1 comes back: the offline partition gets it as leader.
    let (records, reply) = heartbeat(&img, 1, 11, false).unwrap();
    assert!(!reply.fenced);
    apply(&mut img, &records);
    assert!(!img.brokers[&1].fenced);
    let p2 = img.partition("t", 2).unwrap();
    assert_eq!((p2.leader, p2.leader_epoch, p2.partition_epoch), (1, 2, 2));
    // Its other partitions are unchanged until their leaders add it back.
    assert_eq!(img.partition("t", 0).unwrap().leader, 3);
}

#[test]
fn heartbeats_check_the_broker_epoch() {
    let img = image_with(1, vec![]);
    let e = heartbeat(&img, 1, 99, false).unwrap_err();
    assert_eq!(e.kind, ErrorKind::StaleBrokerEpoch);
    assert!(e.message.contains("99") && e.message.contains("11"), "{e}");
    let e = heartbeat(&img, 5, 1, false).unwrap_err();
    assert!(e.message.contains("broker 5 is not registered"), "{e}");
}

#[test]
fn controlled_shutdown_moves_everything_then_fences() {
    let mut img = image_with(
        3,
        vec![
            PartitionImage::new(vec![1, 2, 3]),
            PartitionImage::new(vec![2, 3, 1]),
        ],
    );
    let (records, reply) = heartbeat(&img, 1, 11, true).unwrap();
    assert!(reply.shutdown_ready && reply.fenced);
    apply(&mut img, &records);
    for p in &img.topics["t"].partitions {
        assert_ne!(p.leader, 1);
        assert!(!p.isr.contains(&1));
    }
    assert!(img.brokers[&1].fenced);
    // Asking again is answered without new records.
    let (records, reply) = heartbeat(&img, 1, 11, true).unwrap();
    assert!(records.is_empty() && reply.shutdown_ready);
}

#[test]
fn reregistration_with_a_new_incarnation_bumps_the_epoch_and_fences() {
    let mut img = image_with(2, vec![PartitionImage::new(vec![1, 2])]);
    img.applied_index = 3;
    let (records, epoch) =
        register_broker(&img, 1, "h", 9001, Vec::new(), None, Uuid::new_v4()).unwrap();
    assert_eq!(epoch, 12);
    apply(&mut img, &records);
    assert!(img.brokers[&1].fenced);
    assert_eq!(img.partition("t", 0).unwrap().leader, 2);
    // The same incarnation again (a retry): same epoch, nothing written.
    let inc = img.brokers[&1].incarnation;
    let (records, again) = register_broker(&img, 1, "h", 9001, Vec::new(), None, inc).unwrap();
    assert!(records.is_empty());
    assert_eq!(again, 12);
}

#[test]
fn placement_is_round_robin_and_spreads_leaders() {
    let brokers: Vec<(i32, Option<String>)> = (1..=4).map(|i| (i, None)).collect();
    let a = place(&brokers, 8, 3, 0, 12345).unwrap();
    for r in &a {
        assert_eq!(r.len(), 3);
        assert_eq!(r.iter().collect::<BTreeSet<_>>().len(), 3, "{r:?}");
    }
    let mut leaders = BTreeMap::new();
    for r in &a {
        *leaders.entry(r[0]).or_insert(0) += 1;
    }
    assert_eq!(
        leaders.values().copied().collect::<Vec<_>>(),
        vec![2, 2, 2, 2]
    );
    let e = place(&brokers, 1, 5, 0, 1).unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidReplicationFactor);
    assert!(e.message.contains('5') && e.message.contains('4'), "{e}");
}

#[test]
fn placement_is_rack_aware() {
    let brokers: Vec<(i32, Option<String>)> = vec![
        (1, Some("a".into())),
        (2, Some("a".into())),
        (3, Some("b".into())),
        (4, Some("b".into())),
        (5, Some("c".into())),
        (6, Some("c".into())),
    ];
    let rack = |b: i32| brokers.iter().find(|(id, _)| *id == b).unwrap().1.clone();
    for seed in 0..20u64 {
        let a = place(&brokers, 12, 3, 0, seed * 0x1_0000_0001).unwrap();
        for r in &a {
            let racks: BTreeSet<_> = r.iter().map(|b| rack(*b)).collect();
            assert_eq!(racks.len(), 3, "replicas {r:?} share a rack (seed {seed})");
        }
    }
    // Two racks, RF 3: both racks used, no broker twice.
    let two: Vec<(i32, Option<String>)> = brokers[..4].to_vec();
    for r in place(&two, 6, 3, 0, 99).unwrap() {
        assert_eq!(r.iter().collect::<BTreeSet<_>>().len(), 3);
        let racks: BTreeSet<_> = r.iter().map(|b| rack(*b)).collect();
        assert_eq!(racks.len(), 2, "{r:?}");
    }
}

#[test]
fn create_topics_uses_defaults_and_validates() {
    let img = image_with(3, vec![]);
    let defaults = ControllerDefaults {
        num_partitions: 2,
        default_replication_factor: 3,
    };
    let topics = vec![
        NewTopic {
            id: None,
            name: "d".into(),
            num_partitions: -1,
            replication_factor: -1,
            ..Default::default()
        },
        NewTopic {
            id: None,
            name: "t".into(),
            num_partitions: 1,
            replication_factor: 1,
            ..Default::default()
        },
        NewTopic {
            id: None,
            name: "big".into(),
            num_partitions: 1,
            replication_factor: 4,
            ..Default::default()
        },
        NewTopic {
            id: None,
            name: "zero".into(),
            num_partitions: 0,
            replication_factor: 1,
            ..Default::default()
        },
        NewTopic {
            id: None,
            name: "bad/name".into(),
            num_partitions: 1,
            replication_factor: 1,
            ..Default::default()
        },
        NewTopic {
            id: None,
            name: "manual".into(),
            num_partitions: -1,
            replication_factor: -1,
            assignments: Some(vec![vec![3, 1], vec![2, 3]]),
            ..Default::default()
        },
    ];
    let (records, results) = create_topics(&img, &defaults, &topics, 5);
    assert!(results[0].is_ok());
    assert_eq!(
        results[1].as_ref().unwrap_err().kind,
        ErrorKind::TopicAlreadyExists
    );
    assert_eq!(
        results[2].as_ref().unwrap_err().kind,
        ErrorKind::InvalidReplicationFactor
    );
    assert_eq!(
        results[3].as_ref().unwrap_err().kind,
        ErrorKind::InvalidPartitions
    );
    assert_eq!(
        results[4].as_ref().unwrap_err().kind,
        ErrorKind::InvalidTopic
    );
    assert!(results[5].is_ok());
    let mut after = img.clone();
    apply(&mut after, &records);
    let d = &after.topics["d"];
    assert_eq!(d.partitions.len(), 2);
    assert!(d
        .partitions
        .iter()
        .all(|p| p.replicas.len() == 3 && p.isr == p.replicas && p.leader == p.replicas[0]));
    let m = &after.topics["manual"];
    assert_eq!(m.partitions[0].replicas, vec![3, 1]);
    assert_eq!(m.partitions[1].leader, 2);
}

#[test]
fn create_partitions_grows_with_the_topics_replication_factor() {
    let img = image_with(3, vec![PartitionImage::new(vec![1, 2])]);
    let e = create_partitions(&img, "t", 1, None, 0).unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidPartitions);
    let records = create_partitions(&img, "t", 4, None, 0).unwrap();
    let mut after = img.clone();
    apply(&mut after, &records);
    let t = &after.topics["t"];
    assert_eq!(t.partitions.len(), 4);
    assert!(t.partitions.iter().all(|p| p.replicas.len() == 2));
    let e = create_partitions(&img, "t", i32::MAX, None, 0).unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidPartitions);
    assert!(e.message.contains("limit"), "{e}");
    let e = create_partitions(&img, "nope", 4, None, 0).unwrap_err();
    assert_eq!(e.kind, ErrorKind::UnknownTopicOrPartition);
}

#[test]
fn alter_partition_checks_leader_and_epochs() {
    let mut img = image_with(3, vec![PartitionImage::new(vec![1, 2, 3])]);
    let tid = Uuid::from_u128(7);
    // Shrink to [1, 2].
    let (records, state) = alter_partition(&img, &ap(1, 11, tid, 0, 0, 0, &[1, 2])).unwrap();
    assert_eq!(
        (state.isr.clone(), state.partition_epoch, state.leader_epoch),
        (vec![1, 2], 1, 0)
    );
    apply(&mut img, &records);
    // The same request again is stale.
    let e = alter_partition(&img, &ap(1, 11, tid, 0, 0, 0, &[1])).unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidUpdateVersion);
    let e = alter_partition(&img, &ap(1, 11, tid, 0, 5, 1, &[1])).unwrap_err();
    assert_eq!(e.kind, ErrorKind::FencedLeaderEpoch);
    let e = alter_partition(&img, &ap(2, 12, tid, 0, 0, 1, &[2])).unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotLeaderOrFollower);
    let e = alter_partition(&img, &ap(1, 3, tid, 0, 0, 1, &[1])).unwrap_err();
    assert_eq!(e.kind, ErrorKind::StaleBrokerEpoch);
    let e = alter_partition(&img, &ap(1, 11, tid, 0, 0, 1, &[2])).unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidRequest);
    let e = alter_partition(&img, &ap(1, 11, tid, 0, 0, 1, &[1, 4])).unwrap_err();
    assert_eq!(e.kind, ErrorKind::IneligibleReplica);
    img.brokers.get_mut(&3).unwrap().fenced = true;
    let e = alter_partition(&img, &ap(1, 11, tid, 0, 0, 1, &[1, 2, 3])).unwrap_err();
    assert_eq!(e.kind, ErrorKind::IneligibleReplica);
    assert!(e.message.contains("broker 3"), "{e}");
    let e = alter_partition(&img, &ap(1, 11, Uuid::from_u128(8), 0, 0, 1, &[1])).unwrap_err();
    assert_eq!(e.kind, ErrorKind::UnknownTopicOrPartition);
}

#[test]
fn preferred_election_moves_leadership_back() {
    let mut img = image_with(
        3,
        vec![
            PartitionImage {
                leader: 2,
                ..PartitionImage::new(vec![1, 2, 3])
            },
            PartitionImage::new(vec![1, 2, 3]),
            PartitionImage {
                leader: 3,
                isr: vec![2, 3],
                ..PartitionImage::new(vec![1, 2, 3])
            },
        ],
    );
    let (records, results) = elect_leaders(&img, None, true);
    // Partition 1 needs nothing and is left out; partition 2's preferred is not in the ISR.
    assert_eq!(results.len(), 2);
    assert!(results[0].1.is_ok());
    assert_eq!(
        results[1].1.as_ref().unwrap_err().kind,
        ErrorKind::PreferredLeaderNotAvailable
    );
    apply(&mut img, &records);
    assert_eq!(img.partition("t", 0).unwrap().leader, 1);
    assert_eq!(img.partition("t", 0).unwrap().leader_epoch, 1);
    let (_, results) = elect_leaders(&img, Some(&[("t".into(), 1), ("t".into(), 9)]), true);
    assert_eq!(
        results[0].1.as_ref().unwrap_err().kind,
        ErrorKind::ElectionNotNeeded
    );
    assert_eq!(
        results[1].1.as_ref().unwrap_err().kind,
        ErrorKind::UnknownTopicOrPartition
    );
}

#[test]
fn reassignment_adds_then_completes_when_the_new_replicas_are_in_sync() {
    let mut img = image_with(4, vec![PartitionImage::new(vec![1, 2])]);
    let tid = Uuid::from_u128(7);
    let records = reassign(&img, "t", 0, Some(&[3, 4])).unwrap();
    apply(&mut img, &records);
    let p = img.partition("t", 0).unwrap().clone();
    assert_eq!(p.replicas, vec![3, 4, 1, 2]);
    assert_eq!(p.adding_replicas, vec![3, 4]);
    assert_eq!(p.removing_replicas, vec![1, 2]);
    assert_eq!(p.leader, 1);
    assert_eq!(img.reassignments().count(), 1);
    // The leader adds 3: not done yet. Then 4: done, leadership moves to 3.
    let (records, s) = alter_partition(
        &img,
        &ap(1, 11, tid, 0, p.leader_epoch, p.partition_epoch, &[1, 2, 3]),
    )
    .unwrap();
    assert!(s.is_reassigning());
    apply(&mut img, &records);
    let (records, s) = alter_partition(
        &img,
        &ap(
            1,
            11,
            tid,
            0,
            s.leader_epoch,
            s.partition_epoch,
            &[1, 2, 3, 4],
        ),
    )
    .unwrap();
    assert!(!s.is_reassigning());
    assert_eq!(
        (s.replicas.clone(), s.isr.clone(), s.leader),
        (vec![3, 4], vec![3, 4], 3)
    );
    assert_eq!(s.leader_epoch, p.leader_epoch + 1);
    apply(&mut img, &records);
    assert_eq!(img.reassignments().count(), 0);
    // Nothing to cancel now.
    let e = reassign(&img, "t", 0, None).unwrap_err();
    assert_eq!(e.kind, ErrorKind::NoReassignmentInProgress);
}

#[test]
fn cancelling_a_reassignment_restores_the_original_replicas() {
    let mut img = image_with(4, vec![PartitionImage::new(vec![1, 2])]);
    let r = reassign(&img, "t", 0, Some(&[1, 3])).unwrap();
    apply(&mut img, &r);
    let p = img.partition("t", 0).unwrap();
    assert_eq!(
        (
            p.replicas.clone(),
            p.adding_replicas.clone(),
            p.removing_replicas.clone()
        ),
        (vec![1, 3, 2], vec![3], vec![2])
    );
    let r = reassign(&img, "t", 0, None).unwrap();
    apply(&mut img, &r);
    let p = img.partition("t", 0).unwrap();
    assert_eq!(p.replicas, vec![1, 2]);
    assert!(!p.is_reassigning());
    // A reassignment whose targets are already in sync completes at once.
    let r = reassign(&img, "t", 0, Some(&[2])).unwrap();
    apply(&mut img, &r);
    let p = img.partition("t", 0).unwrap();
    assert_eq!(
        (p.replicas.clone(), p.isr.clone(), p.leader),
        (vec![2], vec![2], 2)
    );
}

#[test]
fn unregistering_moves_partitions_and_forgets_the_broker() {
    let mut img = image_with(2, vec![PartitionImage::new(vec![1, 2])]);
    let records = unregister_broker(&img, 1).unwrap();
    apply(&mut img, &records);
    assert!(!img.brokers.contains_key(&1));
    let p = img.partition("t", 0).unwrap();
    assert_eq!(
        (p.leader, p.isr.clone(), p.replicas.clone()),
        (2, vec![2], vec![1, 2])
    );
    let e = unregister_broker(&img, 1).unwrap_err();
    assert!(e.message.contains("broker 1"), "{e}");
}
