//! Share groups (KIP-932) in `/metrics`: members per share group this broker
//! coordinates, and per share-partition it leads the start offset, in-flight records and
//! acquired records (docs/metrics.md lists them).

use crate::broker::Broker;

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The share-group families of `/metrics` (text exposition format).
pub fn prometheus_text(b: &Broker) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let groups = b.shares.list();
    let _ = writeln!(
        o,
        "# HELP runnel_share_group_members Members of a share group this broker coordinates."
    );
    let _ = writeln!(o, "# TYPE runnel_share_group_members gauge");
    for (id, _) in &groups {
        let n = b.shares.describe(id).map_or(0, |v| v.members.len());
        let _ = writeln!(
            o,
            "runnel_share_group_members{{group=\"{}\"}} {n}",
            escape(id)
        );
    }
    let families = [
        (
            "runnel_share_partition_start_offset",
            "The share-partition start offset (SPSO).",
        ),
        (
            "runnel_share_partition_in_flight_records",
            "Records between the share-partition start and end offsets.",
        ),
        (
            "runnel_share_partition_acquired_records",
            "Records acquired by a share consumer and not yet acknowledged.",
        ),
    ];
    let mut rows = Vec::new();
    for id in b.shares.group_ids_with_partitions() {
        for ((tid, p), s) in b.shares.partitions_of(&id) {
            let topic = b
                .topics
                .get_by_id(tid)
                .map(|t| t.name.clone())
                .unwrap_or_default();
            rows.push((id.clone(), topic, p, s));
        }
    }
    for (i, (name, help)) in families.iter().enumerate() {
        let _ = writeln!(o, "# HELP {name} {help}");
        let _ = writeln!(o, "# TYPE {name} gauge");
        for (g, topic, p, s) in &rows {
            let v = [s.start_offset, s.in_flight, s.acquired][i];
            let _ = writeln!(
                o,
                "{name}{{group=\"{}\",topic=\"{}\",partition=\"{p}\"}} {v}",
                escape(g),
                escape(topic)
            );
        }
    }
    o
}
