//! Trending hashtags per minute on the Rust API, without SQL: the same engine and
//! operators as `examples/tweets/trending.sql`.
//!
//! cargo run -p runnel-sql --example trending_hashtags -- [BOOTSTRAP] [TOPIC]

use runnel_sql::api::{self, StreamBuilder};
use runnel_sql::datafusion::functions::core::expr_fn::get_field;
use runnel_sql::datafusion::functions_aggregate::expr_fn::count;
use runnel_sql::datafusion::prelude::*;
use runnel_sql::sink::console_table;
use runnel_sql::OutputMode;
use std::time::Duration;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> runnel_sql::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let bootstrap = args.get(1).map_or("127.0.0.1:9092", String::as_str);
    let topic = args.get(2).map_or("tweets", String::as_str);

    let mut builder = StreamBuilder::new();
    let raw = builder.kafka(
        "raw",
        &[
            ("kafka.bootstrap.servers", bootstrap),
            ("subscribe", topic),
            ("startingOffsets", "latest"),
        ],
    )?;
    let tweets = raw.select(vec![
        api::from_json(
            col("value"),
            "entities STRUCT<hashtags: ARRAY<STRUCT<text: STRING>>>",
        )
        .alias("tweet"),
        col("timestamp").alias("ts"),
    ])?;
    let tags = tweets
        .select(vec![
            get_field(get_field(col("tweet"), "entities"), "hashtags").alias("tags"),
            col("ts"),
        ])?
        .unnest_columns(&["tags"])?
        .select(vec![
            lower(get_field(col("tags"), "text")).alias("hashtag"),
            col("ts"),
        ])?;
    let trending = tags.aggregate(
        vec![
            api::window(col("ts"), "1 minute").alias("w"),
            col("hashtag"),
        ],
        vec![count(lit(1)).alias("tweets")],
    )?;
    let mut query = builder
        .watermark("ts", Duration::from_secs(30))
        .output_mode(OutputMode::Update)
        .foreach_batch(|batch_id, rows| {
            print!("{}", console_table(batch_id, rows, 20, true)?);
            Ok(())
        })
        .start(trending)?;
    query.run().await
}
