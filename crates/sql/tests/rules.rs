//! Spark's rules about which query allows which output mode, and clear errors for
//! what is not supported. Planning needs no broker (the source connects on start).

use runnel_sql::{OutputMode, QueryOptions, Script, StreamingQuery};
use std::collections::BTreeMap;

const SOURCE: &str = "CREATE TEMPORARY VIEW raw USING kafka OPTIONS (kafka.bootstrap.servers '127.0.0.1:1', subscribe 't');
CREATE TEMPORARY VIEW s AS SELECT CAST(value AS STRING) AS v, timestamp AS ts FROM raw;";

async fn plan(query: &str, mode: Option<OutputMode>) -> Result<StreamingQuery, String> {
    let script = Script::parse(&format!("{SOURCE}\n{query}"), &BTreeMap::new())
        .map_err(|e| e.to_string())?;
    StreamingQuery::from_script(
        &script,
        QueryOptions {
            output_mode: mode,
            ..Default::default()
        },
    )
    .await
    .map_err(|e| e.to_string())
}

#[tokio::test]
async fn output_mode_rules() {
    use OutputMode::*;
    let agg = "SELECT v, count(*) FROM s GROUP BY v";
    let windowed = "SELECT window(ts, '1 minute') AS w, count(*) AS n FROM s WATERMARK ts DELAY OF INTERVAL 10 SECONDS GROUP BY window(ts, '1 minute')";
    let plain = "SELECT v FROM s WHERE v IS NOT NULL";
    // (query, mode, allowed)
    let cases = [
        (plain, Some(Append), true),
        (plain, Some(Update), true),
        (plain, Some(Complete), false),
        (agg, None, false),
        (agg, Some(Append), false),
        (agg, Some(Update), true),
        (agg, Some(Complete), true),
        (windowed, Some(Append), true),
        (windowed, Some(Update), true),
        (windowed, Some(Complete), true),
    ];
    for (q, mode, ok) in cases {
        let r = plan(q, mode).await;
        assert_eq!(r.is_ok(), ok, "{q} in {mode:?}: {:?}", r.err());
    }
    let e = plan(agg, Some(Append)).await.err().unwrap();
    assert!(e.contains("Append output mode not supported"), "{e}");
    let e = plan(plain, Some(Complete)).await.err().unwrap();
    assert!(e.contains("Complete output mode not supported"), "{e}");
}

#[tokio::test]
async fn unsupported_operations_are_clear_errors() {
    let cases = [
        ("SELECT v FROM s ORDER BY v", "Sorting is not supported"),
        (
            "SELECT v, count(*) FROM s GROUP BY v ORDER BY v",
            "Sorting is not supported",
        ),
        (
            "SELECT count(DISTINCT v) FROM s",
            "Distinct aggregations are not supported",
        ),
        (
            "SELECT n, count(*) FROM (SELECT v, count(*) AS n FROM s GROUP BY v) GROUP BY n",
            "Multiple streaming aggregations",
        ),
        (
            "SELECT * FROM s a JOIN s b ON a.v = b.v",
            "Join between two streaming DataFrames/Datasets is not supported in Update output mode, only in Append output mode",
        ),
        ("SELECT v FROM s LIMIT 3", "Limits are not supported"),
        (
            "SELECT DISTINCT ON (v) WITHIN WATERMARK v, ts FROM s",
            "dropDuplicatesWithinWatermark (DISTINCT ON (...) WITHIN WATERMARK) needs a watermark",
        ),
        (
            "SELECT DISTINCT ON (v) v, ts FROM s ORDER BY v, ts",
            "DISTINCT ON with ORDER BY is not supported on streams",
        ),
        ("SELECT v FROM s WITHIN WATERMARK", "WITHIN WATERMARK must follow DISTINCT ON"),
        (
            "SELECT session_window(ts, '30 seconds') AS w, count(*) FROM s WATERMARK ts DELAY OF INTERVAL 10 SECONDS GROUP BY session_window(ts, '30 seconds')",
            "Update output mode is not supported for streaming aggregation with session window",
        ),
        ("SELECT 1", "reads no streaming source"),
        ("SELECT from_json(v, 'a FOO') FROM s", "unknown type"),
    ];
    for (q, msg) in cases {
        let e = plan(q, Some(OutputMode::Update))
            .await
            .err()
            .unwrap_or_else(|| panic!("{q} should fail"));
        assert!(e.contains(msg), "{q}: {e}");
    }
    let e = plan("SELECT DISTINCT v FROM s", Some(OutputMode::Complete))
        .await
        .err()
        .unwrap();
    assert!(e.contains("Complete output mode not supported"), "{e}");
    // Sorting an aggregation is fine in complete mode.
    assert!(plan(
        "SELECT v, count(*) AS n FROM s GROUP BY v ORDER BY n DESC",
        Some(OutputMode::Complete)
    )
    .await
    .is_ok());
}

#[tokio::test]
async fn file_sinks_accept_only_append() {
    let dir = tempfile::tempdir().unwrap();
    let q = format!(
        "CREATE TEMPORARY VIEW out USING json OPTIONS (path '{}');\nINSERT INTO out SELECT v, count(*) AS n FROM s GROUP BY v",
        dir.path().display()
    );
    let e = plan(&q, Some(OutputMode::Update)).await.err().unwrap();
    assert!(e.contains("does not support Update output mode"), "{e}");
}

#[tokio::test]
async fn stream_stream_join_rules() {
    let sides = |join: &str, bound: &str| {
        format!(
            "SELECT * FROM (SELECT v AS lv, ts AS lt FROM s) WATERMARK lt DELAY OF INTERVAL 10 SECONDS AS l \
             {join} (SELECT v AS rv, ts AS rt FROM s) WATERMARK rt DELAY OF INTERVAL 10 SECONDS AS r ON lv = rv {bound}"
        )
    };
    let bound = "AND rt BETWEEN lt AND lt + INTERVAL 1 MINUTE";
    // Inner joins with or without a time bound (without one, state is unbounded); outer
    // joins with watermarks on both sides and a time bound.
    for q in [
        sides("JOIN", bound),
        sides("JOIN", ""),
        sides("LEFT JOIN", bound),
        sides("RIGHT JOIN", bound),
        sides("FULL JOIN", bound),
        "SELECT * FROM s a JOIN s b ON a.v = b.v".to_string(),
    ] {
        let r = plan(&q, Some(OutputMode::Append)).await;
        assert!(r.is_ok(), "{q}: {:?}", r.err());
    }
    let cases = [
        (sides("LEFT JOIN", ""), "Stream-stream LeftOuter join between two streaming DataFrame/Datasets is not supported without a watermark in the join keys, or a watermark on the nullable side and an appropriate range condition"),
        (sides("RIGHT JOIN", ""), "Stream-stream RightOuter join between two streaming DataFrame/Datasets is not supported without a watermark"),
        (sides("FULL JOIN", ""), "Stream-stream FullOuter join"),
        (format!("SELECT lv, count(*) FROM ({}) GROUP BY lv", sides("JOIN", bound)), "aggregations over a stream-stream join are not supported yet"),
        (format!("SELECT * FROM ({}) ORDER BY lv", sides("JOIN", bound)), "Sorting is not supported"),
    ];
    for (q, msg) in cases {
        let e = plan(&q, Some(OutputMode::Append))
            .await
            .err()
            .unwrap_or_else(|| panic!("{q} should fail"));
        assert!(e.contains(msg), "{q}: {e}");
    }
    let e = plan(&sides("JOIN", bound), Some(OutputMode::Complete))
        .await
        .err()
        .unwrap();
    assert!(e.contains("not supported in Complete output mode"), "{e}");
}
