//! `/metrics`: the broker's state in Prometheus' text exposition format (0.0.4).
//!
//! Rendering works on a plain [`Snapshot`] so it is testable without a running broker;
//! `docs/metrics.md` documents every family written here (a test checks both agree).

use std::fmt::Write;

use runnel_protocol::kp::messages::ApiKey;

use crate::metrics::{ApiStats, TopicStats, LATENCY_BUCKETS_S};

/// One partition's log, as the metrics see it.
#[derive(Debug, Clone, Default)]
pub struct PartitionSample {
    pub topic: String,
    pub partition: i32,
    pub size_bytes: u64,
    pub segments: usize,
    pub log_start_offset: i64,
    pub log_end_offset: i64,
}

/// One committed offset of a consumer group and the lag behind the log end.
#[derive(Debug, Clone, Default)]
pub struct LagSample {
    pub group: String,
    pub topic: String,
    pub partition: i32,
    pub committed_offset: i64,
    /// None when the partition no longer exists.
    pub lag: Option<i64>,
}

/// Everything `/metrics` renders, gathered in one pass.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub cluster_id: String,
    pub node_id: i32,
    pub topics: usize,
    pub apis: Vec<(i16, ApiStats)>,
    pub topic_stats: Vec<(String, TopicStats)>,
    pub partitions: Vec<PartitionSample>,
    pub under_replicated: usize,
    pub offline: usize,
    /// (log dir, offline)
    pub log_dirs: Vec<(String, bool)>,
    /// (group, state, members)
    pub groups: Vec<(String, String, usize)>,
    pub lag: Vec<LagSample>,
    pub connections_active: i64,
    pub connections_total: u64,
    /// Authorization denials: (resource type, operation, count).
    pub denials: Vec<(String, String, u64)>,
    /// ((listener, mechanism, succeeded), count)
    pub authentications: Vec<((String, String, bool), u64)>,
}

/// Every metric family: (name, type, help). The order is the order of the output.
pub const FAMILIES: &[(&str, &str, &str)] = &[
    (
        "runnel_broker_info",
        "gauge",
        "Always 1; labels identify the broker.",
    ),
    (
        "runnel_topic_bytes_in_total",
        "counter",
        "Record-batch bytes appended by producers, per topic.",
    ),
    (
        "runnel_topic_records_in_total",
        "counter",
        "Records appended by producers, per topic.",
    ),
    (
        "runnel_topic_bytes_out_total",
        "counter",
        "Record-batch bytes returned to fetchers, per topic.",
    ),
    (
        "runnel_requests_total",
        "counter",
        "Kafka requests handled, per API.",
    ),
    (
        "runnel_request_errors_total",
        "counter",
        "Kafka requests that failed as a whole, per API.",
    ),
    (
        "runnel_request_duration_seconds",
        "histogram",
        "Time from reading a request to its response being ready, per API.",
    ),
    (
        "runnel_topics",
        "gauge",
        "Topics on this broker, internal ones included.",
    ),
    (
        "runnel_partitions",
        "gauge",
        "Partitions this broker leads.",
    ),
    (
        "runnel_under_replicated_partitions",
        "gauge",
        "Partitions with fewer in-sync replicas than replicas.",
    ),
    (
        "runnel_offline_partitions",
        "gauge",
        "Partitions without an available leader (their log directory failed).",
    ),
    (
        "runnel_log_dir_offline",
        "gauge",
        "1 when the log directory was taken offline by an I/O error, else 0.",
    ),
    (
        "runnel_partition_log_size_bytes",
        "gauge",
        "Bytes of the partition's log segments on disk.",
    ),
    (
        "runnel_partition_log_segments",
        "gauge",
        "Segments of the partition's log.",
    ),
    (
        "runnel_partition_log_start_offset",
        "gauge",
        "First offset still in the partition's log.",
    ),
    (
        "runnel_partition_log_end_offset",
        "gauge",
        "Offset the next appended record will get.",
    ),
    (
        "runnel_consumer_group_members",
        "gauge",
        "Members of a consumer group, labelled with its state.",
    ),
    (
        "runnel_consumer_group_committed_offset",
        "gauge",
        "A consumer group's committed offset for a partition.",
    ),
    (
        "runnel_consumer_group_lag",
        "gauge",
        "Records between a group's committed offset and the partition's log end.",
    ),
    (
        "runnel_connections_active",
        "gauge",
        "Open client connections.",
    ),
    (
        "runnel_connections_total",
        "counter",
        "Client connections accepted since start.",
    ),
    (
        "runnel_authorization_denials_total",
        "counter",
        "Requests the authorizer refused, by resource type and operation.",
    ),
    (
        "runnel_authentication_successes_total",
        "counter",
        "Connections that authenticated (SASL, or a TLS client certificate), per listener and mechanism.",
    ),
    (
        "runnel_authentication_failures_total",
        "counter",
        "Failed authentications (bad credentials, failed TLS handshakes, SASL protocol errors), per listener and mechanism.",
    ),
];

/// Kafka's name of an API key ("Produce", "Fetch", ...), or "Unknown<key>".
pub fn api_name(key: i16) -> String {
    match ApiKey::try_from(key) {
        Ok(k) => format!("{k:?}"),
        Err(_) => format!("Unknown{key}"),
    }
}

/// Escapes a label value: backslash, double quote and newline.
pub fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn labels(pairs: &[(&str, &str)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

/// A float as Prometheus reads it.
fn float(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else {
        format!("{v}")
    }
}

struct Out {
    text: String,
}

impl Out {
    fn header(&mut self, name: &str) {
        let (_, kind, help) = FAMILIES
            .iter()
            .find(|(n, _, _)| *n == name)
            .expect("every rendered family is listed in FAMILIES");
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, l: &[(&str, &str)], value: impl std::fmt::Display) {
        let _ = writeln!(self.text, "{name}{} {value}", labels(l));
    }
}

/// Renders the snapshot in the text exposition format.
pub fn render(s: &Snapshot) -> String {
    let mut o = Out {
        text: String::with_capacity(4096),
    };
    let node = s.node_id.to_string();
    o.header("runnel_broker_info");
    o.sample(
        "runnel_broker_info",
        &[
            ("cluster_id", &s.cluster_id),
            ("node_id", &node),
            ("version", env!("CARGO_PKG_VERSION")),
        ],
        1,
    );

    for (name, get) in [
        (
            "runnel_topic_bytes_in_total",
            (|t: &TopicStats| t.bytes_in) as fn(&TopicStats) -> u64,
        ),
        ("runnel_topic_records_in_total", |t| t.records_in),
        ("runnel_topic_bytes_out_total", |t| t.bytes_out),
    ] {
        o.header(name);
        for (topic, t) in &s.topic_stats {
            o.sample(name, &[("topic", topic)], get(t));
        }
    }

    let apis: Vec<(String, &ApiStats)> = s.apis.iter().map(|(k, v)| (api_name(*k), v)).collect();
    o.header("runnel_requests_total");
    for (api, st) in &apis {
        o.sample("runnel_requests_total", &[("api", api)], st.requests);
    }
    o.header("runnel_request_errors_total");
    for (api, st) in &apis {
        o.sample("runnel_request_errors_total", &[("api", api)], st.errors);
    }
    o.header("runnel_request_duration_seconds");
    for (api, st) in &apis {
        for (i, count) in st.buckets.iter().enumerate() {
            let le = LATENCY_BUCKETS_S.get(i).copied().unwrap_or(f64::INFINITY);
            o.sample(
                "runnel_request_duration_seconds_bucket",
                &[("api", api), ("le", &float(le))],
                count,
            );
        }
        o.sample(
            "runnel_request_duration_seconds_sum",
            &[("api", api)],
            float(st.latency_sum_s),
        );
        o.sample(
            "runnel_request_duration_seconds_count",
            &[("api", api)],
            st.requests,
        );
    }

    o.header("runnel_topics");
    o.sample("runnel_topics", &[], s.topics);
    o.header("runnel_partitions");
    o.sample("runnel_partitions", &[], s.partitions.len());
    o.header("runnel_under_replicated_partitions");
    o.sample(
        "runnel_under_replicated_partitions",
        &[],
        s.under_replicated,
    );
    o.header("runnel_offline_partitions");
    o.sample("runnel_offline_partitions", &[], s.offline);
    o.header("runnel_log_dir_offline");
    for (dir, offline) in &s.log_dirs {
        o.sample(
            "runnel_log_dir_offline",
            &[("log_dir", dir)],
            u8::from(*offline),
        );
    }

    for (name, get) in [
        (
            "runnel_partition_log_size_bytes",
            (|p: &PartitionSample| p.size_bytes as i64) as fn(&PartitionSample) -> i64,
        ),
        ("runnel_partition_log_segments", |p| p.segments as i64),
        ("runnel_partition_log_start_offset", |p| p.log_start_offset),
        ("runnel_partition_log_end_offset", |p| p.log_end_offset),
    ] {
        o.header(name);
        for p in &s.partitions {
            let part = p.partition.to_string();
            o.sample(name, &[("topic", &p.topic), ("partition", &part)], get(p));
        }
    }

    o.header("runnel_consumer_group_members");
    for (group, state, members) in &s.groups {
        o.sample(
            "runnel_consumer_group_members",
            &[("group", group), ("state", state)],
            members,
        );
    }
    o.header("runnel_consumer_group_committed_offset");
    for l in &s.lag {
        let part = l.partition.to_string();
        o.sample(
            "runnel_consumer_group_committed_offset",
            &[
                ("group", &l.group),
                ("topic", &l.topic),
                ("partition", &part),
            ],
            l.committed_offset,
        );
    }
    o.header("runnel_consumer_group_lag");
    for l in &s.lag {
        if let Some(lag) = l.lag {
            let part = l.partition.to_string();
            o.sample(
                "runnel_consumer_group_lag",
                &[
                    ("group", &l.group),
                    ("topic", &l.topic),
                    ("partition", &part),
                ],
                lag,
            );
        }
    }

    o.header("runnel_connections_active");
    o.sample("runnel_connections_active", &[], s.connections_active);
    o.header("runnel_connections_total");
    o.sample("runnel_connections_total", &[], s.connections_total);
    o.header("runnel_authorization_denials_total");
    for (rt, op, n) in &s.denials {
        o.sample(
            "runnel_authorization_denials_total",
            &[("resource_type", rt), ("operation", op)],
            n,
        );
    }
    for (family, ok) in [
        ("runnel_authentication_successes_total", true),
        ("runnel_authentication_failures_total", false),
    ] {
        o.header(family);
        for ((listener, mechanism, succeeded), n) in &s.authentications {
            if *succeeded == ok {
                o.sample(
                    family,
                    &[("listener", listener), ("mechanism", mechanism)],
                    n,
                );
            }
        }
    }
    o.text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Snapshot {
        let mut buckets = vec![0; LATENCY_BUCKETS_S.len() + 1];
        buckets[2] = 1;
        for b in buckets.iter_mut().skip(3) {
            *b = 3;
        }
        Snapshot {
            cluster_id: "abc".into(),
            node_id: 1,
            topics: 1,
            apis: vec![(
                0,
                ApiStats {
                    requests: 3,
                    errors: 0,
                    buckets,
                    latency_sum_s: 0.0125,
                },
            )],
            topic_stats: vec![(
                "orders".into(),
                TopicStats {
                    bytes_in: 100,
                    records_in: 4,
                    bytes_out: 50,
                },
            )],
            partitions: vec![PartitionSample {
                topic: "orders".into(),
                partition: 0,
                size_bytes: 4096,
                segments: 1,
                log_start_offset: 0,
                log_end_offset: 4,
            }],
            groups: vec![("g\"1".into(), "Stable".into(), 2)],
            lag: vec![LagSample {
                group: "g\"1".into(),
                topic: "orders".into(),
                partition: 0,
                committed_offset: 1,
                lag: Some(3),
            }],
            connections_active: 2,
            connections_total: 7,
            denials: vec![("TOPIC".into(), "WRITE".into(), 2)],
            authentications: vec![(("SASL".into(), "PLAIN".into(), false), 2)],
            log_dirs: vec![("/data/1".into(), false), ("/data/2".into(), true)],
            ..Snapshot::default()
        }
    }

    #[test]
    fn http_renders_every_family_with_help_and_type() {
        let text = render(&sample());
        for (name, kind, _) in FAMILIES {
            assert!(
                text.contains(&format!("# TYPE {name} {kind}\n")),
                "{name} missing"
            );
        }
        assert!(text.contains("runnel_topic_bytes_in_total{topic=\"orders\"} 100\n"));
        assert!(text.contains("runnel_requests_total{api=\"Produce\"} 3\n"));
        assert!(text
            .contains("runnel_request_duration_seconds_bucket{api=\"Produce\",le=\"0.0025\"} 1\n"));
        assert!(text
            .contains("runnel_request_duration_seconds_bucket{api=\"Produce\",le=\"+Inf\"} 3\n"));
        assert!(text.contains("runnel_request_duration_seconds_count{api=\"Produce\"} 3\n"));
        assert!(text.contains("runnel_under_replicated_partitions 0\n"));
        assert!(text.contains("runnel_offline_partitions 0\n"));
        assert!(text.contains("runnel_log_dir_offline{log_dir=\"/data/2\"} 1\n"));
        assert!(
            text.contains("runnel_partition_log_segments{topic=\"orders\",partition=\"0\"} 1\n")
        );
        assert!(text.contains(
            "runnel_consumer_group_lag{group=\"g\\\"1\",topic=\"orders\",partition=\"0\"} 3\n"
        ));
        assert!(text.contains("runnel_connections_active 2\n"));
        assert!(text.contains(
            "runnel_authentication_failures_total{listener=\"SASL\",mechanism=\"PLAIN\"} 2\n"
        ));
    }

    #[test]
    fn http_every_sample_line_is_well_formed() {
        let text = render(&sample());
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (series, value) = line.rsplit_once(' ').expect("name and value");
            assert!(value.parse::<f64>().is_ok(), "bad value in {line}");
            let name = series.split('{').next().unwrap();
            assert!(
                FAMILIES.iter().any(|(f, _, _)| name == *f
                    || name
                        .strip_prefix(f)
                        .is_some_and(|s| { ["_bucket", "_sum", "_count"].contains(&s) })),
                "undeclared family in {line}"
            );
        }
    }

    #[test]
    fn http_api_names_are_kafkas() {
        assert_eq!(api_name(0), "Produce");
        assert_eq!(api_name(18), "ApiVersions");
        assert_eq!(api_name(-5), "Unknown-5");
    }

    #[test]
    fn http_label_values_are_escaped() {
        assert_eq!(escape_label("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
    }
}
