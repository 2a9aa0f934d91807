//! [`MetaConfig`]: who the voters are, where this node keeps its metadata, and the
//! controller's timers and defaults.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

/// Kafka's `num.partitions` and `default.replication.factor`: what CreateTopics uses for -1.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControllerDefaults {
    pub num_partitions: i32,
    pub default_replication_factor: i32,
}

impl Default for ControllerDefaults {
    fn default() -> Self {
        ControllerDefaults {
            num_partitions: 1,
            default_replication_factor: 1,
        }
    }
}

#[derive(Clone, Debug)]
pub struct MetaConfig {
    /// This voter's id (Kafka's `node.id`); must be one of `voters`.
    pub node_id: i32,
    /// Kafka's `controller.quorum.voters`, see [`parse_voters`].
    pub voters: Vec<(i32, SocketAddr)>,
    /// Where the vote, the log and the snapshots live.
    pub dir: PathBuf,
    /// Kafka's `broker.session.timeout.ms`: a broker that sends no heartbeat for this long
    /// is fenced.
    pub broker_session_timeout: Duration,
    /// Raft election timeout range (a follower that hears no leader for a random time in
    /// this range starts an election).
    pub election_timeout_min: Duration,
    pub election_timeout_max: Duration,
    /// Raft heartbeat interval of the leader (must be well below the election timeout).
    pub heartbeat_interval: Duration,
    /// A snapshot is taken after this many log entries, and the log before it is purged.
    pub snapshot_every: u64,
    pub defaults: ControllerDefaults,
    /// The cluster id a new metadata log records (the node's `meta.properties`, as
    /// `kafka-storage format` gives both the same); None: a random one.
    pub cluster_id: Option<String>,
    /// Kafka's `auto.leader.rebalance.enable`.
    pub auto_leader_rebalance: bool,
    /// Kafka's `leader.imbalance.check.interval.seconds`.
    pub leader_imbalance_check_interval: Duration,
    /// How the quorum port's connections are secured (both sides): PLAINTEXT unless the
    /// broker passes its controller listener's TLS / SASL.
    pub transport: crate::transport::QuorumTransport,
}

impl MetaConfig {
    /// A config with the defaults (for loopback clusters) for the given voter.
    pub fn new(node_id: i32, voters: Vec<(i32, SocketAddr)>, dir: impl Into<PathBuf>) -> Self {
        MetaConfig {
            node_id,
            voters,
            dir: dir.into(),
            broker_session_timeout: Duration::from_millis(9000),
            election_timeout_min: Duration::from_millis(150),
            election_timeout_max: Duration::from_millis(300),
            heartbeat_interval: Duration::from_millis(50),
            snapshot_every: 1000,
            defaults: ControllerDefaults::default(),
            cluster_id: None,
            auto_leader_rebalance: true,
            leader_imbalance_check_interval: Duration::from_secs(300),
            transport: Default::default(),
        }
    }

    /// This node's own controller address.
    pub fn own_addr(&self) -> Option<SocketAddr> {
        voter_addr(&self.voters, self.node_id)
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.voters.is_empty() {
            return Err("controller.quorum.voters is empty".into());
        }
        for (i, (id, _)) in self.voters.iter().enumerate() {
            if *id < 0 {
                return Err(format!("voter id {id} is negative"));
            }
            if self.voters[..i].iter().any(|(other, _)| other == id) {
                return Err(format!("voter id {id} is listed twice"));
            }
        }
        if self.own_addr().is_none() {
            return Err(format!(
                "node.id {} is not one of the voters {}",
                self.node_id,
                format_voters(&self.voters)
            ));
        }
        if self.election_timeout_min >= self.election_timeout_max {
            return Err("election_timeout_min must be below election_timeout_max".into());
        }
        if self.heartbeat_interval >= self.election_timeout_min {
            return Err("heartbeat_interval must be below election_timeout_min".into());
        }
        Ok(())
    }
}

pub(crate) fn voter_addr(voters: &[(i32, SocketAddr)], id: i32) -> Option<SocketAddr> {
    voters.iter().find(|(v, _)| *v == id).map(|(_, a)| *a)
}

/// Formats voters the way Kafka's `controller.quorum.voters` spells them.
pub fn format_voters(voters: &[(i32, SocketAddr)]) -> String {
    voters
        .iter()
        .map(|(id, addr)| format!("{id}@{addr}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Parses Kafka's `controller.quorum.voters`: `1@127.0.0.1:19093,2@host:19093`. Host names
/// are resolved now (the first address wins).
pub fn parse_voters(s: &str) -> Result<Vec<(i32, SocketAddr)>, String> {
    let mut out: Vec<(i32, SocketAddr)> = Vec::new();
    for part in s.split(',').map(str::trim) {
        if part.is_empty() {
            return Err(format!(
                "controller.quorum.voters {s:?}: empty entry (expected id@host:port)"
            ));
        }
        let (id, addr) = part.split_once('@').ok_or_else(|| {
            format!("controller.quorum.voters entry {part:?}: expected id@host:port")
        })?;
        let id: i32 = id.trim().parse().map_err(|_| {
            format!("controller.quorum.voters entry {part:?}: node id {id:?} is not a number")
        })?;
        if id < 0 {
            return Err(format!(
                "controller.quorum.voters entry {part:?}: node id {id} is negative"
            ));
        }
        let addr = addr.trim();
        let sock = match addr.parse::<SocketAddr>() {
            Ok(a) => a,
            Err(_) => addr
                .to_socket_addrs()
                .map_err(|e| {
                    format!("controller.quorum.voters entry {part:?}: address {addr:?}: {e}")
                })?
                .next()
                .ok_or_else(|| {
                    format!(
                        "controller.quorum.voters entry {part:?}: address {addr:?} resolves to nothing"
                    )
                })?,
        };
        if out.iter().any(|(other, _)| *other == id) {
            return Err(format!(
                "controller.quorum.voters {s:?}: node id {id} is listed twice"
            ));
        }
        out.push((id, sock));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kafka_voters() {
        let v = parse_voters("1@127.0.0.1:19093, 2@127.0.0.1:19094").unwrap();
        assert_eq!(
            v,
            vec![
                (1, "127.0.0.1:19093".parse().unwrap()),
                (2, "127.0.0.1:19094".parse().unwrap())
            ]
        );
        assert_eq!(format_voters(&v), "1@127.0.0.1:19093,2@127.0.0.1:19094");
        let v6 = parse_voters("3@[::1]:9093,4@localhost:9094").unwrap();
        assert_eq!(v6[0], (3, "[::1]:9093".parse().unwrap()));
        assert_eq!(v6[1].1.port(), 9094);
    }

    #[test]
    fn bad_voters_name_the_bad_part() {
        let e = parse_voters("1@127.0.0.1:19093,x@127.0.0.1:1").unwrap_err();
        assert!(e.contains("\"x\""), "{e}");
        let e = parse_voters("1@127.0.0.1:19093,2127.0.0.1:1").unwrap_err();
        assert!(e.contains("2127.0.0.1:1"), "{e}");
        let e = parse_voters("1@127.0.0.1:1,1@127.0.0.1:2").unwrap_err();
        assert!(e.contains("listed twice"), "{e}");
        let e = parse_voters("1@127.0.0.1:notaport").unwrap_err();
        assert!(e.contains("notaport"), "{e}");
        assert!(parse_voters("").is_err());
    }
}
