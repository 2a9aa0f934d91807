//! `runnel groups list|describe|delete|reset-offsets`, like kafka-consumer-groups.

use super::{ConnArgs, UsageError};
use anyhow::Context;
use clap::{ArgGroup, Args, Subcommand};
use runnel_client::{Client, ClientConfig, GroupDescription, OffsetSpec, ResponseError};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Subcommand)]
pub enum GroupsCommand {
    /// List consumer groups, one a line (with --state: id, state and type).
    List {
        /// Only groups in this state (Stable, Empty, PreparingRebalance, ...); repeatable.
        #[arg(long = "state", value_name = "STATE")]
        states: Vec<String>,
        /// Print the state and type of each group too.
        #[arg(long, short = 'v')]
        verbose: bool,
        /// One JSON object per group.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Show a group's state, members (client ids, hosts, assignments) and, per partition,
    /// the committed offset, the log end offset and the lag.
    Describe {
        /// Group id(s).
        #[arg(required = true)]
        groups: Vec<String>,
        /// One JSON object per group instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Delete groups and their committed offsets (refused while a group has members).
    Delete {
        /// Group id(s).
        #[arg(required = true)]
        groups: Vec<String>,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Move a group's committed offsets (the group must have no members). Shows the
    /// plan unless --execute is given.
    ResetOffsets(ResetArgs),
}

#[derive(Args)]
#[command(group(ArgGroup::new("target").required(true).args(
    ["to_earliest", "to_latest", "to_datetime", "to_offset", "shift_by"])))]
#[command(group(ArgGroup::new("scope").required(true).args(["topics", "all_topics"])))]
pub struct ResetArgs {
    /// Group id.
    group: String,
    /// A topic, or TOPIC:P,P,... for some partitions (repeatable).
    #[arg(long = "topic", value_name = "TOPIC[:PARTITIONS]")]
    topics: Vec<String>,
    /// Every topic the group has committed offsets for.
    #[arg(long)]
    all_topics: bool,
    /// To the log start offset.
    #[arg(long)]
    to_earliest: bool,
    /// To the log end offset.
    #[arg(long)]
    to_latest: bool,
    /// To the first offset with a timestamp at or after this time: YYYY-MM-DDTHH:MM:SS[.sss]
    /// with an optional Z or ±HH:MM (UTC without), or milliseconds since the epoch.
    #[arg(long, value_name = "DATETIME", value_parser = parse_datetime)]
    to_datetime: Option<i64>,
    /// To this offset (clamped to the log's start and end).
    #[arg(long, value_name = "OFFSET", allow_hyphen_values = true)]
    to_offset: Option<i64>,
    /// By this many records from the committed offset (negative: back), clamped.
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    shift_by: Option<i64>,
    /// Only show the new offsets (the default).
    #[arg(long, conflicts_with = "execute")]
    dry_run: bool,
    /// Commit the new offsets.
    #[arg(long)]
    execute: bool,
    /// JSON instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: ConnArgs,
}

pub async fn run(cmd: GroupsCommand) -> anyhow::Result<()> {
    match cmd {
        GroupsCommand::List {
            states,
            verbose,
            json,
            conn,
        } => {
            let client = conn.connect(ClientConfig::default()).await?;
            let states: Vec<String> = states.iter().map(|s| canonical_state(s)).collect();
            for g in client.list_groups(&states).await? {
                if json {
                    outln!(
                        "{}",
                        serde_json::json!({"group": g.group_id, "state": g.state,
                            "type": g.group_type, "protocol_type": g.protocol_type})
                    );
                } else if verbose || !states.is_empty() {
                    outln!("{}\t{}\t{}", g.group_id, g.state, g.group_type);
                } else {
                    outln!("{}", g.group_id);
                }
            }
        }
        GroupsCommand::Describe { groups, json, conn } => {
            let client = conn.connect(ClientConfig::default()).await?;
            for (i, group) in groups.iter().enumerate() {
                let d = describe(&client, group).await?;
                if json {
                    outln!("{}", d.to_json());
                } else {
                    if i > 0 {
                        outln!();
                    }
                    out!("{}", d.to_text());
                }
            }
        }
        GroupsCommand::Delete { groups, conn } => {
            let client = conn.connect(ClientConfig::default()).await?;
            let mut failed = Vec::new();
            for (group, result) in client.delete_groups(&groups).await? {
                match result {
                    Ok(()) => outln!("Deleted group {group}."),
                    Err(e) => {
                        let why = match e.kafka_error() {
                            Some(ResponseError::NonEmptyGroup) => {
                                " (it has members: stop its consumers first)".to_string()
                            }
                            Some(ResponseError::GroupIdNotFound) => " (no such group)".to_string(),
                            _ => String::new(),
                        };
                        errln!("error: {e}{why}");
                        failed.push(group);
                    }
                }
            }
            if !failed.is_empty() {
                anyhow::bail!("could not delete group(s) {}", failed.join(", "));
            }
        }
        GroupsCommand::ResetOffsets(args) => reset(args).await?,
    }
    Ok(())
}

/// Kafka's state names, whatever the case the user typed.
fn canonical_state(s: &str) -> String {
    const NAMES: [&str; 9] = [
        "Stable",
        "Empty",
        "Dead",
        "PreparingRebalance",
        "CompletingRebalance",
        "Assigning",
        "Reconciling",
        "Unknown",
        "NotReady",
    ];
    NAMES
        .iter()
        .find(|n| n.eq_ignore_ascii_case(s))
        .map_or_else(|| s.to_string(), |n| n.to_string())
}

/// One partition line of `describe`.
#[derive(Debug, Clone, PartialEq)]
struct PartitionLag {
    topic: String,
    partition: i32,
    committed: Option<i64>,
    log_end: Option<i64>,
    member_id: Option<String>,
    host: Option<String>,
    client_id: Option<String>,
}

impl PartitionLag {
    fn lag(&self) -> Option<i64> {
        match (self.committed, self.log_end) {
            (Some(c), Some(e)) => Some((e - c).max(0)),
            _ => None,
        }
    }
}

struct Described {
    group: GroupDescription,
    partitions: Vec<PartitionLag>,
}

async fn describe(client: &Client, group: &str) -> anyhow::Result<Described> {
    let share = client
        .describe_share_group(group)
        .await
        .with_context(|| format!("cannot describe group {group}"))?;
    if let Some((d, starts)) = share {
        return describe_share(client, d, starts).await;
    }
    let d = client
        .describe_group(group)
        .await
        .with_context(|| format!("cannot describe group {group}"))?;
    let committed = client
        .committed_offsets(group)
        .await
        .with_context(|| format!("cannot fetch the committed offsets of group {group}"))?;
    if d.state == "Dead" && committed.is_empty() {
        return Err(runnel_client::Error::kafka(
            format!("describe group {group}"),
            ResponseError::GroupIdNotFound.code(),
            Some("the group does not exist".into()),
        )
        .into());
    }
    // Every partition the group has an offset for or a member is assigned.
    let mut parts: BTreeMap<(String, i32), Option<i64>> = BTreeMap::new();
    for c in &committed {
        parts.insert((c.topic.clone(), c.partition), Some(c.offset));
    }
    let ends = assigned_and_log_ends(client, &d, &mut parts).await;
    let partitions = parts
        .into_iter()
        .map(|((topic, partition), committed)| {
            let owner = d.owner(&topic, partition);
            PartitionLag {
                log_end: ends.get(&(topic.clone(), partition)).copied(),
                member_id: owner.map(|m| m.member_id.clone()),
                host: owner.map(|m| m.host.clone()),
                client_id: owner.map(|m| m.client_id.clone()),
                topic,
                partition,
                committed,
            }
        })
        .collect();
    Ok(Described {
        group: d,
        partitions,
    })
}

/// Adds the partitions members are assigned to `parts` (offset unknown), and returns the
/// log end of every partition in it (a deleted topic has none; its lines show "-").
async fn assigned_and_log_ends(
    client: &Client,
    d: &GroupDescription,
    parts: &mut BTreeMap<(String, i32), Option<i64>>,
) -> BTreeMap<(String, i32), i64> {
    for m in &d.members {
        for (t, ps) in &m.assignment {
            for p in ps {
                parts.entry((t.clone(), *p)).or_insert(None);
            }
        }
    }
    let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for (t, p) in parts.keys() {
        by_topic.entry(t.clone()).or_default().push(*p);
    }
    let mut ends: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for (t, ps) in &by_topic {
        if let Ok(listed) = client.list_offsets(t, ps, OffsetSpec::Latest).await {
            for l in listed {
                ends.insert((t.clone(), l.partition), l.offset);
            }
        }
    }
    ends
}

/// A share group (KIP-932): every member may read every partition, so the partition
/// lines name no member; the offset column is the share-partition start offset (every
/// record below it was accepted, rejected or archived) and LAG counts the records from
/// there to the log end.
async fn describe_share(
    client: &Client,
    d: GroupDescription,
    starts: Vec<runnel_client::ShareStartOffset>,
) -> anyhow::Result<Described> {
    let mut parts: BTreeMap<(String, i32), Option<i64>> = starts
        .into_iter()
        .map(|s| {
            (
                (s.topic, s.partition),
                (s.start_offset >= 0).then_some(s.start_offset),
            )
        })
        .collect();
    let ends = assigned_and_log_ends(client, &d, &mut parts).await;
    let partitions = parts
        .into_iter()
        .map(|((topic, partition), committed)| PartitionLag {
            log_end: ends.get(&(topic.clone(), partition)).copied(),
            member_id: None,
            host: None,
            client_id: None,
            topic,
            partition,
            committed,
        })
        .collect();
    Ok(Described {
        group: d,
        partitions,
    })
}

fn dash<T: ToString>(v: &Option<T>) -> String {
    v.as_ref()
        .map_or_else(|| "-".to_string(), |v| v.to_string())
}

fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, |s| s.len()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, s)| format!("{s:<w$}", w = widths[i]))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn assignment_text(a: &BTreeMap<String, Vec<i32>>) -> String {
    if a.is_empty() {
        return "-".into();
    }
    a.iter()
        .map(|(t, ps)| {
            format!(
                "{t}:{}",
                ps.iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl Described {
    fn to_text(&self) -> String {
        let g = &self.group;
        let mut s = format!(
            "Group: {}\tState: {}\tType: {}\tAssignor: {}\tMembers: {}",
            g.group_id,
            g.state,
            g.group_type,
            if g.assignor.is_empty() {
                "-"
            } else {
                &g.assignor
            },
            g.members.len()
        );
        if let Some(e) = g.epoch {
            s.push_str(&format!("\tEpoch: {e}"));
        }
        s.push_str("\n\n");
        if g.members.is_empty() {
            s.push_str(&format!("Group {} has no active members.\n\n", g.group_id));
        } else {
            let mut rows = vec![vec![
                "MEMBER-ID".to_string(),
                "INSTANCE-ID".into(),
                "CLIENT-ID".into(),
                "HOST".into(),
                "#PARTITIONS".into(),
                "ASSIGNMENT".into(),
            ]];
            for m in &g.members {
                rows.push(vec![
                    m.member_id.clone(),
                    dash(&m.instance_id),
                    m.client_id.clone(),
                    m.host.clone(),
                    m.assignment
                        .values()
                        .map(|v| v.len())
                        .sum::<usize>()
                        .to_string(),
                    assignment_text(&m.assignment),
                ]);
            }
            s.push_str(&table(&rows));
            s.push('\n');
        }
        let mut rows = vec![vec![
            "GROUP".to_string(),
            "TOPIC".into(),
            "PARTITION".into(),
            if g.group_type == "share" {
                "START-OFFSET".into()
            } else {
                "CURRENT-OFFSET".into()
            },
            "LOG-END-OFFSET".into(),
            "LAG".into(),
            "CONSUMER-ID".into(),
            "HOST".into(),
            "CLIENT-ID".into(),
        ]];
        for p in &self.partitions {
            rows.push(vec![
                g.group_id.clone(),
                p.topic.clone(),
                p.partition.to_string(),
                dash(&p.committed),
                dash(&p.log_end),
                dash(&p.lag()),
                dash(&p.member_id),
                dash(&p.host),
                dash(&p.client_id),
            ]);
        }
        s.push_str(&table(&rows));
        s
    }

    fn to_json(&self) -> serde_json::Value {
        let g = &self.group;
        serde_json::json!({
            "group": g.group_id,
            "state": g.state,
            "type": g.group_type,
            "protocol_type": g.protocol_type,
            "assignor": g.assignor,
            "epoch": g.epoch,
            "members": g.members.iter().map(|m| serde_json::json!({
                "member_id": m.member_id,
                "instance_id": m.instance_id,
                "client_id": m.client_id,
                "host": m.host,
                "member_epoch": m.member_epoch,
                "assignment": m.assignment.iter().map(|(t, ps)| serde_json::json!({
                    "topic": t, "partitions": ps})).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "partitions": self.partitions.iter().map(|p| serde_json::json!({
                "topic": p.topic,
                "partition": p.partition,
                "committed_offset": p.committed,
                "log_end_offset": p.log_end,
                "lag": p.lag(),
                "member_id": p.member_id,
                "host": p.host,
                "client_id": p.client_id,
            })).collect::<Vec<_>>(),
        })
    }
}

/// Parses TOPIC or TOPIC:P,P,...
fn parse_topic_spec(s: &str) -> Result<(String, Option<Vec<i32>>), UsageError> {
    match s.split_once(':') {
        None if !s.is_empty() => Ok((s.to_string(), None)),
        Some((t, ps)) if !t.is_empty() => {
            let parts: Result<Vec<i32>, _> =
                ps.split(',').map(|p| p.trim().parse::<i32>()).collect();
            match parts {
                Ok(v) if !v.is_empty() && v.iter().all(|p| *p >= 0) => Ok((t.to_string(), Some(v))),
                _ => Err(UsageError(format!(
                    "--topic {s:?}: expected TOPIC or TOPIC:PARTITION[,PARTITION...]"
                ))),
            }
        }
        _ => Err(UsageError(format!(
            "--topic {s:?}: the topic name is empty"
        ))),
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// YYYY-MM-DDTHH:MM:SS[.fff][Z|±HH:MM|±HHMM] (UTC when no zone) or epoch milliseconds.
fn parse_datetime(s: &str) -> Result<i64, String> {
    let bad = || {
        format!("{s:?} is not a date-time like 2024-05-01T12:00:00[.000][Z|+02:00] or epoch milliseconds")
    };
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().map_err(|_| bad());
    }
    let (date, time) = s.split_once(['T', ' ']).ok_or_else(bad)?;
    let dp: Vec<&str> = date.split('-').collect();
    if dp.len() != 3 {
        return Err(bad());
    }
    let num = |x: &str| x.parse::<i64>().map_err(|_| bad());
    let (y, mo, d) = (num(dp[0])?, num(dp[1])?, num(dp[2])?);
    // Split off the zone.
    let (clock, zone_ms) = if let Some(t) = time.strip_suffix(['Z', 'z']) {
        (t, 0)
    } else if let Some(i) = time.rfind(['+', '-']) {
        let (t, z) = time.split_at(i);
        let sign = if z.starts_with('-') { -1 } else { 1 };
        let z = z[1..].replace(':', "");
        if z.len() != 4 {
            return Err(bad());
        }
        let (zh, zm) = (num(&z[..2])?, num(&z[2..])?);
        (t, sign * (zh * 3600 + zm * 60) * 1000)
    } else {
        (time, 0)
    };
    let (hms, frac) = clock.split_once('.').unwrap_or((clock, ""));
    let tp: Vec<&str> = hms.split(':').collect();
    if tp.len() < 2 || tp.len() > 3 {
        return Err(bad());
    }
    let (h, mi) = (num(tp[0])?, num(tp[1])?);
    let sec = if tp.len() == 3 { num(tp[2])? } else { 0 };
    let ms = if frac.is_empty() {
        0
    } else {
        let f: String = frac.chars().chain("000".chars()).take(3).collect();
        num(&f)?
    };
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return Err(bad());
    }
    let days = days_from_civil(y, mo, d);
    Ok(((days * 24 + h) * 60 + mi) * 60_000 + sec * 1000 + ms - zone_ms)
}

async fn reset(args: ResetArgs) -> anyhow::Result<()> {
    let client = args.conn.connect(ClientConfig::default()).await?;
    let group = &args.group;
    let d = client
        .describe_group(group)
        .await
        .with_context(|| format!("cannot describe group {group}"))?;
    if !d.is_inactive() {
        anyhow::bail!(
            "Assignments can only be reset if the group '{group}' is inactive, but the current state is {} ({} member{}); stop its consumers first",
            d.state,
            d.members.len(),
            if d.members.len() == 1 { "" } else { "s" }
        );
    }
    let committed: BTreeMap<(String, i32), i64> = client
        .committed_offsets(group)
        .await?
        .into_iter()
        .map(|c| ((c.topic, c.partition), c.offset))
        .collect();
    // Which partitions.
    let mut targets: BTreeMap<String, BTreeSet<i32>> = BTreeMap::new();
    if args.all_topics {
        for (t, p) in committed.keys() {
            targets.entry(t.clone()).or_default().insert(*p);
        }
        if targets.is_empty() {
            anyhow::bail!("group {group} has no committed offsets; name the topics with --topic");
        }
    }
    for spec in &args.topics {
        let (topic, parts) = parse_topic_spec(spec)?;
        let meta = client
            .topic(&topic)
            .await
            .with_context(|| format!("cannot look up topic {topic}"))?;
        let all: BTreeSet<i32> = meta.partitions.iter().map(|p| p.partition).collect();
        let chosen: BTreeSet<i32> = match parts {
            None => all.clone(),
            Some(ps) => {
                if let Some(p) = ps.iter().find(|p| !all.contains(p)) {
                    return Err(UsageError(format!(
                        "topic {topic} has no partition {p} (it has {})",
                        all.len()
                    ))
                    .into());
                }
                ps.into_iter().collect()
            }
        };
        targets.entry(topic).or_default().extend(chosen);
    }
    // New offsets.
    let mut plan: Vec<(String, i32, i64)> = Vec::new();
    for (topic, parts) in &targets {
        let ps: Vec<i32> = parts.iter().copied().collect();
        let earliest = client
            .list_offsets(topic, &ps, OffsetSpec::Earliest)
            .await?;
        let latest = client.list_offsets(topic, &ps, OffsetSpec::Latest).await?;
        let at_time = match args.to_datetime {
            Some(ts) => Some(
                client
                    .list_offsets(topic, &ps, OffsetSpec::Timestamp(ts))
                    .await?,
            ),
            None => None,
        };
        for (i, &p) in ps.iter().enumerate() {
            let (lo, hi) = (earliest[i].offset, latest[i].offset);
            let clamp = |o: i64| o.clamp(lo, hi);
            let new = if args.to_earliest {
                lo
            } else if args.to_latest {
                hi
            } else if let Some(listed) = &at_time {
                let o = listed[i].offset;
                if o < 0 {
                    hi
                } else {
                    clamp(o)
                }
            } else if let Some(o) = args.to_offset {
                clamp(o)
            } else if let Some(n) = args.shift_by {
                let current = committed.get(&(topic.clone(), p)).copied().ok_or_else(|| {
                    anyhow::anyhow!(
                        "group {group} has no committed offset for {topic}/{p} to shift from"
                    )
                })?;
                clamp(current.saturating_add(n))
            } else {
                unreachable!("clap requires one target")
            };
            plan.push((topic.clone(), p, new));
        }
    }
    if args.json {
        for (t, p, o) in &plan {
            outln!(
                "{}",
                serde_json::json!({"group": group, "topic": t, "partition": p,
                    "previous_offset": committed.get(&(t.clone(), *p)), "new_offset": o,
                    "executed": args.execute})
            );
        }
    } else {
        let mut rows = vec![vec![
            "GROUP".to_string(),
            "TOPIC".into(),
            "PARTITION".into(),
            "PREVIOUS-OFFSET".into(),
            "NEW-OFFSET".into(),
        ]];
        for (t, p, o) in &plan {
            rows.push(vec![
                group.clone(),
                t.clone(),
                p.to_string(),
                dash(&committed.get(&(t.clone(), *p))),
                o.to_string(),
            ]);
        }
        out!("{}", table(&rows));
    }
    if args.execute {
        client
            .commit_group_offsets(group, &plan)
            .await
            .with_context(|| format!("cannot commit the new offsets of group {group}"))?;
        if !args.json {
            outln!("Reset the offsets of {} partition(s).", plan.len());
        }
    } else if !args.json {
        outln!("(dry run: nothing was changed; add --execute to commit these offsets)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetimes_parse() {
        assert_eq!(parse_datetime("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_datetime("1970-01-01T00:00:01.5"), Ok(1500));
        assert_eq!(
            parse_datetime("2024-05-01T12:00:00Z"),
            Ok(1_714_564_800_000)
        );
        assert_eq!(
            parse_datetime("2024-05-01T14:00:00+02:00"),
            Ok(1_714_564_800_000)
        );
        assert_eq!(
            parse_datetime("2024-05-01T10:00:00-0200"),
            Ok(1_714_564_800_000)
        );
        assert_eq!(parse_datetime("1714564800000"), Ok(1_714_564_800_000));
        assert!(parse_datetime("2024-13-01T00:00:00").is_err());
        assert!(parse_datetime("yesterday").is_err());
    }

    #[test]
    fn topic_specs_parse() {
        assert_eq!(parse_topic_spec("t").unwrap(), ("t".into(), None));
        assert_eq!(
            parse_topic_spec("t:0,2").unwrap(),
            ("t".into(), Some(vec![0, 2]))
        );
        assert!(parse_topic_spec("t:").is_err());
        assert!(parse_topic_spec(":1").is_err());
        assert!(parse_topic_spec("t:x").is_err());
    }

    #[test]
    fn lag_needs_both_offsets() {
        let mut p = PartitionLag {
            topic: "t".into(),
            partition: 0,
            committed: Some(5),
            log_end: Some(9),
            member_id: None,
            host: None,
            client_id: None,
        };
        assert_eq!(p.lag(), Some(4));
        p.committed = None;
        assert_eq!(p.lag(), None);
        assert_eq!(canonical_state("stable"), "Stable");
    }
}
