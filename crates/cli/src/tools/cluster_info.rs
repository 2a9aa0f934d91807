//! `runnel cluster info`: the cluster id, the brokers (the controller marked) and the
//! topics, as `rpk cluster info` and `kcat -L` show them.

use super::ConnArgs;
use clap::Args;
use runnel_client::{ClientConfig, ClusterMetadata};

#[derive(Args)]
pub struct InfoArgs {
    /// One JSON document instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub conn: ConnArgs,
}

pub async fn run(args: InfoArgs) -> anyhow::Result<()> {
    let client = args.conn.connect(ClientConfig::default()).await?;
    let metadata = client.metadata(None, false).await?;
    if args.json {
        outln!("{}", info_json(&metadata));
    } else {
        out!("{}", info_text(&metadata));
    }
    Ok(())
}

/// Topics the broker reported without an error, sorted by name.
fn topics(m: &ClusterMetadata) -> Vec<&runnel_client::TopicMetadata> {
    let mut topics: Vec<_> = m.topics.iter().filter(|t| t.error_code == 0).collect();
    topics.sort_by(|a, b| a.name.cmp(&b.name));
    topics
}

fn info_json(m: &ClusterMetadata) -> serde_json::Value {
    let mut brokers: Vec<_> = m.brokers.iter().collect();
    brokers.sort_by_key(|b| b.node_id);
    serde_json::json!({
        "cluster_id": m.cluster_id,
        "controller_id": m.controller_id,
        "brokers": brokers.iter().map(|b| serde_json::json!({
            "node_id": b.node_id,
            "host": b.host,
            "port": b.port,
            "rack": b.rack,
            "controller": b.node_id == m.controller_id,
        })).collect::<Vec<_>>(),
        "topics": topics(m).iter().map(|t| serde_json::json!({
            "topic": t.name,
            "internal": t.is_internal,
            "partitions": t.partitions.len(),
            "replication_factor": t.partitions.first().map_or(0, |p| p.replicas.len()),
        })).collect::<Vec<_>>(),
    })
}

fn info_text(m: &ClusterMetadata) -> String {
    let mut s = format!(
        "CLUSTER\n=======\n{}\n\nBROKERS\n=======\n",
        m.cluster_id.as_deref().unwrap_or("(no cluster id)")
    );
    let mut brokers: Vec<_> = m.brokers.iter().collect();
    brokers.sort_by_key(|b| b.node_id);
    s.push_str(&format!(
        "{:<6}{:<24}{:<8}{}\n",
        "ID", "HOST", "PORT", "RACK"
    ));
    for b in brokers {
        let id = if b.node_id == m.controller_id {
            format!("{}*", b.node_id)
        } else {
            b.node_id.to_string()
        };
        s.push_str(&format!(
            "{id:<6}{:<24}{:<8}{}\n",
            b.host,
            b.port,
            b.rack.as_deref().unwrap_or("-")
        ));
    }
    let topics = topics(m);
    s.push_str(&format!(
        "(* the controller)\n\nTOPICS\n======\n{:<40}{:<12}{}\n",
        "NAME", "PARTITIONS", "REPLICAS"
    ));
    for t in topics {
        s.push_str(&format!(
            "{:<40}{:<12}{}\n",
            t.name,
            t.partitions.len(),
            t.partitions.first().map_or(0, |p| p.replicas.len())
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use runnel_client::{BrokerMetadata, PartitionMetadata, TopicMetadata};

    fn metadata() -> ClusterMetadata {
        let broker = |id| BrokerMetadata {
            node_id: id,
            host: "127.0.0.1".into(),
            port: 9091 + id,
            rack: None,
        };
        ClusterMetadata {
            cluster_id: Some("abc".into()),
            controller_id: 2,
            brokers: vec![broker(2), broker(1)],
            topics: vec![TopicMetadata {
                name: "t".into(),
                topic_id: "id".into(),
                is_internal: false,
                partitions: vec![PartitionMetadata {
                    partition: 0,
                    leader: 1,
                    leader_epoch: 0,
                    replicas: vec![1, 2],
                    isr: vec![1, 2],
                    offline_replicas: vec![],
                    error_code: 0,
                }],
                error_code: 0,
            }],
        }
    }

    #[test]
    fn info_marks_the_controller_and_counts_topics() {
        let j = info_json(&metadata());
        assert_eq!(j["cluster_id"], "abc");
        assert_eq!(j["brokers"][0]["node_id"], 1);
        assert_eq!(j["brokers"][1]["controller"], true);
        assert_eq!(j["topics"][0]["replication_factor"], 2);
        let text = info_text(&metadata());
        assert!(text.contains("\n2*    127.0.0.1"), "{text}");
        assert!(text.contains("\nt "), "{text}");
    }
}
