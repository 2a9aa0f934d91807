//! `runnel partitions reassign` (like kafka-reassign-partitions, with the plan proposed for
//! you) and `runnel partitions elect-leaders` (like kafka-leader-election).
//!
//! `reassign --brokers 1,2,3,4` proposes a plan that spreads the replicas of the chosen
//! topics evenly over those brokers (moving as few replicas as it can, and spreading the
//! preferred leaders too) and prints it in Kafka's JSON shape; with `--execute` it
//! applies it, optionally with a replication throttle on every broker, shows progress
//! until no partition is moving, removes the throttle and moves leadership to the
//! preferred replicas.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Subcommand;
use kafka_protocol::messages::alter_partition_reassignments_request::{
    ReassignablePartition, ReassignableTopic,
};
use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, BrokerId, ElectLeadersRequest,
    ListPartitionReassignmentsRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use runnel_client::{AlterConfigOp, ClientConfig, ConfigResource};

use super::{ConnArgs, UsageError};

/// The broker config that limits how fast a moving replica copies (bytes per second).
pub const THROTTLE_KEY: &str = "follower.replication.throttled.rate";

#[derive(Subcommand)]
pub enum PartitionsCommand {
    /// Propose (and with --execute apply) a plan spreading replicas over brokers.
    Reassign {
        /// The brokers replicas should be spread over, e.g. 1,2,3,4 after adding broker 4.
        #[arg(long, value_delimiter = ',', required = true)]
        brokers: Vec<i32>,
        /// Topics to move (default: every topic but internal ones).
        #[arg(long, value_delimiter = ',')]
        topics: Vec<String>,
        /// Apply the plan and wait until every partition has moved.
        #[arg(long)]
        execute: bool,
        /// While moving, limit each broker's replica copying to this many bytes/s.
        #[arg(long, value_name = "BYTES_PER_SEC")]
        throttle: Option<u64>,
        /// Give up waiting after this long (the reassignment goes on in the cluster).
        #[arg(long, default_value_t = 600)]
        timeout_secs: u64,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Move leadership back to each partition's preferred (first) replica.
    ElectLeaders {
        /// Only this topic (default: every partition that needs it).
        #[arg(long)]
        topic: Option<String>,
        #[command(flatten)]
        conn: ConnArgs,
    },
}

pub async fn run(cmd: PartitionsCommand) -> anyhow::Result<()> {
    match cmd {
        PartitionsCommand::Reassign {
            brokers,
            topics,
            execute,
            throttle,
            timeout_secs,
            conn,
        } => reassign(&conn, &brokers, &topics, execute, throttle, timeout_secs).await,
        PartitionsCommand::ElectLeaders { topic, conn } => elect(&conn, topic).await,
    }
}

type Assignment = (String, i32, Vec<i32>);

/// Spreads replicas evenly over `brokers`: each keeps at most its fair share, replicas
/// already on a broker that is under its share stay put, the rest go to the least loaded
/// broker not yet holding the partition. The first replica (the preferred leader) is the
/// one that has led least so far, so leadership is spread too.
pub fn balanced_plan(current: &[Assignment], brokers: &[i32]) -> Vec<Assignment> {
    let brokers: Vec<i32> = brokers
        .iter()
        .copied()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let total: usize = current.iter().map(|(_, _, r)| r.len()).sum();
    let n = brokers.len().max(1);
    let (base, extra) = (total / n, total % n);
    // Up to `extra` brokers may hold one more than `base`.
    let mut load: BTreeMap<i32, usize> = brokers.iter().map(|&b| (b, 0)).collect();
    let mut over_base = 0usize;
    let mut leaders: BTreeMap<i32, usize> = brokers.iter().map(|&b| (b, 0)).collect();
    let mut plan = Vec::with_capacity(current.len());
    let has_room = |load: &BTreeMap<i32, usize>, over: usize, b: i32| {
        let l = load[&b];
        l < base || (l == base && over < extra)
    };
    let mut kept: Vec<Vec<i32>> = Vec::with_capacity(current.len());
    // First pass: keep what may stay.
    for (_, _, replicas) in current {
        let mut keep = Vec::new();
        for &r in replicas {
            if load.contains_key(&r) && has_room(&load, over_base, r) {
                if load[&r] == base {
                    over_base += 1;
                }
                *load.get_mut(&r).expect("known broker") += 1;
                keep.push(r);
            }
        }
        kept.push(keep);
    }
    // Second pass: fill each partition up to its replication factor.
    for ((topic, partition, replicas), mut set) in current.iter().zip(kept) {
        let rf = replicas.len().min(brokers.len());
        while set.len() < rf {
            let pick = brokers
                .iter()
                .copied()
                .filter(|b| !set.contains(b))
                .min_by_key(|b| (!has_room(&load, over_base, *b), load[b], *b))
                .expect("rf <= brokers");
            if load[&pick] == base {
                over_base += 1;
            }
            *load.get_mut(&pick).expect("known broker") += 1;
            set.push(pick);
        }
        plan.push((topic.clone(), *partition, set));
    }
    // The greedy passes can corner late partitions (every broker with room already holds
    // them): move replicas from the most to the least loaded broker until within one.
    for _ in 0..total * n {
        let (&max_b, &max_l) = load
            .iter()
            .max_by_key(|(b, l)| (**l, -**b))
            .expect("brokers");
        let (&min_b, &min_l) = load
            .iter()
            .min_by_key(|(b, l)| (**l, **b))
            .expect("brokers");
        if max_l <= min_l + 1 {
            break;
        }
        let Some(slot) = plan
            .iter_mut()
            .find(|(_, _, r)| r.contains(&max_b) && !r.contains(&min_b))
        else {
            break;
        };
        for r in slot.2.iter_mut().filter(|r| **r == max_b) {
            *r = min_b;
        }
        *load.get_mut(&max_b).expect("known") -= 1;
        *load.get_mut(&min_b).expect("known") += 1;
    }
    for ((_, _, replicas), (_, _, set)) in current.iter().zip(plan.iter_mut()) {
        // Preferred leader: the current one if it stays and has led least, else the
        // replica that has led least.
        let leader = set
            .iter()
            .copied()
            .min_by_key(|b| (leaders[b], replicas.first() != Some(b), *b))
            .expect("non-empty");
        *leaders.get_mut(&leader).expect("known broker") += 1;
        set.retain(|b| *b != leader);
        set.insert(0, leader);
    }
    plan
}

fn plan_json(plan: &[Assignment]) -> String {
    let partitions: Vec<serde_json::Value> = plan
        .iter()
        .map(|(t, p, r)| serde_json::json!({"topic": t, "partition": p, "replicas": r}))
        .collect();
    serde_json::json!({"version": 1, "partitions": partitions}).to_string()
}

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

async fn reassign(
    conn: &ConnArgs,
    brokers: &[i32],
    topics: &[String],
    execute: bool,
    throttle: Option<u64>,
    timeout_secs: u64,
) -> anyhow::Result<()> {
    let client = conn.connect(ClientConfig::default()).await?;
    let metadata = client.metadata(None, false).await?;
    let known: BTreeSet<i32> = metadata.brokers.iter().map(|b| b.node_id).collect();
    if let Some(b) = brokers.iter().find(|b| !known.contains(b)) {
        return Err(UsageError(format!(
            "broker {b} is not in the cluster (live brokers: {known:?})"
        ))
        .into());
    }
    let mut current: Vec<Assignment> = Vec::new();
    for t in &metadata.topics {
        let chosen = if topics.is_empty() {
            !t.is_internal && !t.name.starts_with("__")
        } else {
            topics.contains(&t.name)
        };
        if chosen {
            for p in &t.partitions {
                current.push((t.name.clone(), p.partition, p.replicas.clone()));
            }
        }
    }
    if let Some(missing) = topics
        .iter()
        .find(|t| !metadata.topics.iter().any(|m| &m.name == *t))
    {
        return Err(UsageError(format!("topic '{missing}' does not exist")).into());
    }
    let plan = balanced_plan(&current, brokers);
    let moves: Vec<&Assignment> = plan
        .iter()
        .zip(&current)
        .filter(|(new, old)| new.2 != old.2)
        .map(|(new, _)| new)
        .collect();
    outln!(
        "Current partition replica assignment\n{}\n",
        plan_json(&current)
    );
    outln!(
        "Proposed partition reassignment configuration\n{}",
        plan_json(&plan)
    );
    errln!(
        "{} of {} partitions change replicas",
        moves.len(),
        plan.len()
    );
    if !execute {
        errln!("(a plan only: run again with --execute to apply it)");
        return Ok(());
    }
    let involved: BTreeSet<i32> = current
        .iter()
        .chain(&plan)
        .flat_map(|(_, _, r)| r.iter().copied())
        .collect();
    if let Some(rate) = throttle {
        for &b in &involved {
            client
                .incremental_alter_configs(
                    &ConfigResource::Broker(b),
                    &[AlterConfigOp::Set(THROTTLE_KEY.into(), rate.to_string())],
                    false,
                )
                .await
                .with_context(|| format!("set the replication throttle on broker {b}"))?;
        }
        errln!("throttle: {rate} bytes/s per broker while moving");
    }
    let mut by_topic: BTreeMap<&str, Vec<ReassignablePartition>> = BTreeMap::new();
    for (t, p, r) in &moves {
        by_topic.entry(t).or_default().push(
            ReassignablePartition::default()
                .with_partition_index(*p)
                .with_replicas(Some(r.iter().map(|&b| BrokerId(b)).collect())),
        );
    }
    let request = AlterPartitionReassignmentsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(
            by_topic
                .into_iter()
                .map(|(t, ps)| {
                    ReassignableTopic::default()
                        .with_name(name(t))
                        .with_partitions(ps)
                })
                .collect(),
        );
    let bootstrap = client.bootstrap_connection().await?;
    let response = bootstrap.send(&request, 0).await?;
    runnel_client::Error::check(response.error_code, || "reassign partitions".into(), None)?;
    for t in &response.responses {
        for p in &t.partitions {
            runnel_client::Error::check(
                p.error_code,
                || format!("reassign {}-{}", t.name.0, p.partition_index),
                p.error_message.as_ref().map(|m| m.to_string()),
            )?;
        }
    }
    // Progress until nothing is moving.
    let started = Instant::now();
    let deadline = started + Duration::from_secs(timeout_secs);
    loop {
        let ongoing = bootstrap
            .send(
                &ListPartitionReassignmentsRequest::default().with_timeout_ms(10_000),
                0,
            )
            .await?;
        let moving: usize = ongoing.topics.iter().map(|t| t.partitions.len()).sum();
        errln!(
            "[{:>5.1}s] {} of {} partitions still moving",
            started.elapsed().as_secs_f64(),
            moving,
            moves.len()
        );
        if moving == 0 {
            break;
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "{moving} partitions were still moving after {timeout_secs}s; the reassignment goes on in the cluster (check with this command later); the throttle stays set"
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    if throttle.is_some() {
        for &b in &involved {
            client
                .incremental_alter_configs(
                    &ConfigResource::Broker(b),
                    &[AlterConfigOp::Delete(THROTTLE_KEY.into())],
                    false,
                )
                .await
                .with_context(|| format!("remove the replication throttle from broker {b}"))?;
        }
        errln!("throttle removed");
    }
    let moved: Vec<(String, i32)> = moves.iter().map(|(t, p, _)| (t.clone(), *p)).collect();
    elect_preferred(&bootstrap, Some(moved)).await?;
    errln!("done in {:.1}s", started.elapsed().as_secs_f64());
    Ok(())
}

async fn elect_preferred(
    conn: &runnel_client::Connection,
    partitions: Option<Vec<(String, i32)>>,
) -> anyhow::Result<usize> {
    let topic_partitions = partitions.map(|ps| {
        let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
        for (t, p) in ps {
            by_topic.entry(t).or_default().push(p);
        }
        by_topic
            .into_iter()
            .map(|(t, ps)| {
                TopicPartitions::default()
                    .with_topic(name(&t))
                    .with_partitions(ps)
            })
            .collect()
    });
    let request = ElectLeadersRequest::default()
        .with_election_type(0)
        .with_topic_partitions(topic_partitions)
        .with_timeout_ms(30_000);
    let response = conn.send(&request, 1).await?;
    let mut elected = 0;
    const ELECTION_NOT_NEEDED: i16 = 84;
    for t in &response.replica_election_results {
        for p in &t.partition_result {
            match p.error_code {
                0 => {
                    elected += 1;
                    errln!(
                        "{}-{}: leadership moved to the preferred replica",
                        t.topic.0,
                        p.partition_id
                    );
                }
                ELECTION_NOT_NEEDED => {}
                code => runnel_client::Error::check(
                    code,
                    || {
                        format!(
                            "elect the preferred leader of {}-{}",
                            t.topic.0, p.partition_id
                        )
                    },
                    p.error_message.as_ref().map(|m| m.to_string()),
                )?,
            }
        }
    }
    Ok(elected)
}

async fn elect(conn: &ConnArgs, topic: Option<String>) -> anyhow::Result<()> {
    let client = conn.connect(ClientConfig::default()).await?;
    let partitions = match topic {
        None => None,
        Some(t) => {
            let md = client.topic(&t).await?;
            Some(
                md.partitions
                    .iter()
                    .map(|p| (t.clone(), p.partition))
                    .collect(),
            )
        }
    };
    let bootstrap = client.bootstrap_connection().await?;
    let n = elect_preferred(&bootstrap, partitions).await?;
    outln!("{n} partitions changed leader");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(plan: &[Assignment]) -> BTreeMap<i32, usize> {
        let mut c = BTreeMap::new();
        for (_, _, r) in plan {
            for b in r {
                *c.entry(*b).or_default() += 1;
            }
        }
        c
    }

    #[test]
    fn a_new_broker_gets_its_share_and_few_replicas_move() {
        // 6 partitions, RF 2, on brokers 1-3; broker 4 joins.
        let current: Vec<Assignment> = (0..6)
            .map(|p| ("t".to_string(), p, vec![1 + p % 3, 1 + (p + 1) % 3]))
            .collect();
        let plan = balanced_plan(&current, &[1, 2, 3, 4]);
        let c = counts(&plan);
        assert_eq!(
            c.values().copied().collect::<Vec<_>>(),
            vec![3, 3, 3, 3],
            "{plan:?}"
        );
        for ((_, _, old), (_, _, new)) in current.iter().zip(&plan) {
            assert_eq!(new.len(), 2);
            assert_ne!(new[0], new[1]);
            let _ = old;
        }
        let moved: usize = current
            .iter()
            .zip(&plan)
            .map(|((_, _, o), (_, _, n))| n.iter().filter(|b| !o.contains(b)).count())
            .sum();
        assert_eq!(moved, 3, "only broker 4's share moves: {plan:?}");
        let leaders: BTreeSet<i32> = plan.iter().map(|(_, _, r)| r[0]).collect();
        assert_eq!(
            leaders.len(),
            4,
            "preferred leaders spread over all brokers: {plan:?}"
        );
    }

    #[test]
    fn an_already_balanced_cluster_keeps_its_replicas() {
        let current: Vec<Assignment> = (0..3)
            .map(|p| {
                (
                    "t".to_string(),
                    p,
                    vec![1 + p % 3, 1 + (p + 1) % 3, 1 + (p + 2) % 3],
                )
            })
            .collect();
        let plan = balanced_plan(&current, &[1, 2, 3]);
        for ((_, _, o), (_, _, n)) in current.iter().zip(&plan) {
            let (a, b): (BTreeSet<_>, BTreeSet<_>) = (o.iter().collect(), n.iter().collect());
            assert_eq!(a, b);
        }
    }
}
