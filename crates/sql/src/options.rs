//! The option names each source and sink knows, checked once when a query is built.
//!
//! Spark's options are case-insensitive strings and Spark ignores names it does not read,
//! so a misspelled `startingOffset` silently starts at `latest`. Runnel refuses a name it
//! does not know and suggests the closest known one; a name Spark has and Runnel does not
//! implement yet is refused as such, never ignored.

use crate::error::{Result, SqlError};
use std::collections::BTreeMap;

/// The option names of one source or sink format.
pub struct KnownOptions {
    /// What the options belong to, for messages: "the kafka source".
    pub what: &'static str,
    /// Options Runnel reads.
    pub known: &'static [&'static str],
    /// Spark's options that Runnel does not implement yet.
    pub not_yet: &'static [&'static str],
    /// Whether other `kafka.`-prefixed keys pass to the Kafka client.
    pub kafka_passthrough: bool,
}

/// Options every sink declaration may carry: they set the query, not the sink.
const QUERY: [&str; 5] = [
    "checkpointLocation",
    "outputMode",
    "trigger",
    "queryName",
    "echoConsole",
];

pub const KAFKA_SOURCE: KnownOptions = KnownOptions {
    what: "the kafka source",
    known: &[
        "kafka.bootstrap.servers",
        "subscribe",
        "subscribePattern",
        "assign",
        "startingOffsets",
        "endingOffsets",
        "maxOffsetsPerTrigger",
        "failOnDataLoss",
        "includeHeaders",
        "startingOffsetsByTimestamp",
        "startingTimestamp",
        "startingOffsetsByTimestampStrategy",
        "endingOffsetsByTimestamp",
        "endingTimestamp",
        "minPartitions",
        "minOffsetsPerTrigger",
        "maxTriggerDelay",
        "groupIdPrefix",
        "kafka.group.id",
    ],
    not_yet: &[
        "kafkaConsumer.pollTimeoutMs",
        "fetchOffset.numRetries",
        "fetchOffset.retryIntervalMs",
    ],
    kafka_passthrough: true,
};

pub const TEXT_SOURCE: KnownOptions = KnownOptions {
    what: "the text file source",
    known: &["path", "maxFilesPerTrigger"],
    not_yet: &[
        "latestFirst",
        "fileNameOnly",
        "maxFileAge",
        "cleanSource",
        "sourceArchiveDir",
        "wholetext",
        "lineSep",
        "maxBytesPerTrigger",
    ],
    kafka_passthrough: false,
};

pub const STATIC_FILE: KnownOptions = KnownOptions {
    what: "a static file table",
    known: &["path", "header"],
    not_yet: &[
        "sep",
        "delimiter",
        "inferSchema",
        "schema",
        "quote",
        "escape",
        "nullValue",
        "multiLine",
        "encoding",
    ],
    kafka_passthrough: false,
};

const CONSOLE_SINK: KnownOptions = KnownOptions {
    what: "the console sink",
    known: &["numRows", "truncate"],
    not_yet: &[],
    kafka_passthrough: false,
};

const KAFKA_SINK: KnownOptions = KnownOptions {
    what: "the kafka sink",
    known: &["kafka.bootstrap.servers", "topic", "exactlyOnce"],
    not_yet: &["includeHeaders"],
    kafka_passthrough: true,
};

const FILE_SINK: KnownOptions = KnownOptions {
    what: "the file sink",
    known: &["path", "partitionBy"],
    not_yet: &["compression", "maxRecordsPerFile"],
    kafka_passthrough: false,
};

const MEMORY_SINK: KnownOptions = KnownOptions {
    what: "the memory sink",
    known: &[],
    not_yet: &[],
    kafka_passthrough: false,
};

/// The option names of a sink format, or None for a format that is not a sink.
pub fn sink_options(format: &str) -> Option<&'static KnownOptions> {
    match format {
        "console" => Some(&CONSOLE_SINK),
        "kafka" => Some(&KAFKA_SINK),
        "json" | "parquet" => Some(&FILE_SINK),
        "memory" => Some(&MEMORY_SINK),
        _ => None,
    }
}

/// Refuses a source's option that `spec` does not know.
pub fn check(spec: &KnownOptions, opts: &BTreeMap<String, String>) -> Result<()> {
    check_keys(spec, &[], opts)
}

/// Refuses a sink declaration's option that neither the sink nor the query knows.
pub fn check_sink(spec: &KnownOptions, opts: &BTreeMap<String, String>) -> Result<()> {
    check_keys(spec, &QUERY, opts)
}

fn check_keys(spec: &KnownOptions, extra: &[&str], opts: &BTreeMap<String, String>) -> Result<()> {
    let known = || spec.known.iter().chain(extra).copied();
    for key in opts.keys() {
        if known().any(|k| k.eq_ignore_ascii_case(key)) {
            continue;
        }
        if let Some(k) = spec.not_yet.iter().find(|k| k.eq_ignore_ascii_case(key)) {
            return Err(SqlError::option(
                key,
                format!(
                    "Spark's option {k:?} of {} is not supported by Runnel yet",
                    spec.what
                ),
            ));
        }
        if spec.kafka_passthrough && key.to_ascii_lowercase().starts_with("kafka.") {
            continue; // a librdkafka setting: the client checks it
        }
        let hint = match closest(key, known()) {
            Some(k) => format!("did you mean {k:?}? "),
            None => String::new(),
        };
        let list: Vec<&str> = known().collect();
        let passthrough = if spec.kafka_passthrough {
            ", or a Kafka client setting prefixed with 'kafka.'"
        } else {
            ""
        };
        return Err(SqlError::option(
            key,
            format!(
                "unknown option of {}; {hint}(known: {}{passthrough})",
                spec.what,
                if list.is_empty() {
                    "none".to_string()
                } else {
                    list.join(", ")
                }
            ),
        ));
    }
    Ok(())
}

/// The known name nearest to `key` (case-insensitive edit distance), if it is near
/// enough to be a likely misspelling: at most a third of the name's length, at least 2.
pub fn closest<'a>(key: &str, known: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let key = key.to_ascii_lowercase();
    known
        .map(|k| (edit_distance(&key, &k.to_ascii_lowercase()), k))
        .filter(|(d, k)| *d <= (k.len() / 3).max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance over bytes (option names are ASCII).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Options from `(key, value)` pairs (also for the sources' tests).
    pub(crate) fn opts(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn err(spec: &KnownOptions, pairs: &[(&str, &str)]) -> String {
        check(spec, &opts(pairs)).unwrap_err().to_string()
    }

    #[test]
    fn misspelled_kafka_option_names_the_closest() {
        let e = err(
            &KAFKA_SOURCE,
            &[("subscribe", "t"), ("startingOffset", "earliest")],
        );
        assert!(
            e.contains("startingOffset") && e.contains("did you mean \"startingOffsets\""),
            "{e}"
        );
        let e = err(&KAFKA_SOURCE, &[("subcribe", "t")]);
        assert!(e.contains("did you mean \"subscribe\""), "{e}");
        let e = err(&KAFKA_SOURCE, &[("maxOffsetPerTrigger", "5")]);
        assert!(e.contains("did you mean \"maxOffsetsPerTrigger\""), "{e}");
        // Far from everything: no guess, but the list.
        let e = err(&KAFKA_SOURCE, &[("colour", "red")]);
        assert!(
            !e.contains("did you mean") && e.contains("known: kafka.bootstrap.servers"),
            "{e}"
        );
    }

    #[test]
    fn known_and_passthrough_options_pass_in_any_case() {
        let ok = opts(&[
            ("KAFKA.BOOTSTRAP.SERVERS", "h:1"),
            ("subscribe", "t"),
            ("startingoffsets", "earliest"),
            ("kafka.fetch.min.bytes", "1"),
            ("kafka.security.protocol", "plaintext"),
        ]);
        check(&KAFKA_SOURCE, &ok).unwrap();
        // The file source has no passthrough.
        assert!(err(&TEXT_SOURCE, &[("path", "/x"), ("kafka.x", "1")]).contains("unknown option"));
    }

    #[test]
    fn spark_options_not_implemented_are_refused_as_such() {
        for k in ["kafkaConsumer.pollTimeoutMs", "fetchOffset.numRetries"] {
            let e = err(&KAFKA_SOURCE, &[("subscribe", "t"), (k, "1")]);
            assert!(
                e.contains(k) && e.contains("not supported by Runnel yet"),
                "{e}"
            );
        }
        let e = err(&TEXT_SOURCE, &[("path", "/x"), ("latestFirst", "true")]);
        assert!(e.contains("not supported by Runnel yet"), "{e}");
    }

    #[test]
    fn sinks_accept_query_options_and_refuse_typos() {
        let console = sink_options("console").unwrap();
        check_sink(
            console,
            &opts(&[
                ("numRows", "5"),
                ("outputMode", "append"),
                ("checkpointLocation", "/c"),
            ]),
        )
        .unwrap();
        let e = check_sink(console, &opts(&[("checkpointLocaton", "/c")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("did you mean \"checkpointLocation\""), "{e}");
        let kafka = sink_options("kafka").unwrap();
        check_sink(
            kafka,
            &opts(&[
                ("kafka.bootstrap.servers", "h:1"),
                ("topic", "o"),
                ("kafka.linger.ms", "1"),
            ]),
        )
        .unwrap();
        let e = check_sink(kafka, &opts(&[("topc", "o")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("did you mean \"topic\""), "{e}");
        let file = sink_options("parquet").unwrap();
        let e = check_sink(
            file,
            &opts(&[("path", "/o"), ("partitionby", "a"), ("paht", "x")]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("paht") && e.contains("did you mean \"path\""),
            "{e}"
        );
    }

    #[test]
    fn edit_distance_counts_edits() {
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("startingoffset", "startingoffsets"), 1);
        assert_eq!(edit_distance("subcsribe", "subscribe"), 2);
        assert_eq!(edit_distance("same", "same"), 0);
    }
}
