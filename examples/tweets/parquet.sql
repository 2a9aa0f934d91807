-- (4) The tweets as Parquet files partitioned by hour, exactly once (commit log).
--   runnel sql -f examples/tweets/parquet.sql -d path=/tmp/tweets-parquet
-- A batch every 10 s writes one file per hour it touches (a batch as fast as possible
-- would write a small file every few milliseconds).
SET bootstrap = 127.0.0.1:9092;
SET topic = tweets;
SET startingOffsets = latest;

-- The Kafka source, with Spark's options. Rows: key, value, topic, partition, offset,
-- timestamp, timestampType.
CREATE TEMPORARY VIEW tweets_raw USING kafka OPTIONS (
  kafka.bootstrap.servers '${bootstrap}',
  subscribe '${topic}',
  startingOffsets '${startingOffsets}',
  endingOffsets '${endingOffsets:-}',
  maxOffsetsPerTrigger '${maxOffsetsPerTrigger:-1000000}'
);

-- The tweet JSON (Twitter API v1.1 shape), parsed with a Spark DDL schema.
CREATE TEMPORARY VIEW tweets AS
SELECT from_json(CAST(value AS STRING),
         'created_at STRING, id BIGINT, id_str STRING, text STRING, source STRING,
          user STRUCT<id: BIGINT, name: STRING, screen_name: STRING, location: STRING,
                      followers_count: BIGINT, friends_count: BIGINT, lang: STRING, verified: BOOLEAN>,
          entities STRUCT<hashtags: ARRAY<STRUCT<text: STRING, indices: ARRAY<INT>>>,
                          urls: ARRAY<STRUCT<url: STRING, expanded_url: STRING>>,
                          user_mentions: ARRAY<STRUCT<screen_name: STRING, id: BIGINT>>>,
          lang STRING, retweet_count BIGINT, favorite_count BIGINT, timestamp_ms STRING') AS tweet,
       timestamp AS ts
FROM tweets_raw;

CREATE TEMPORARY VIEW out USING parquet OPTIONS (
  path '${path:-/tmp/runnel-tweets-parquet}',
  partitionBy 'hour',
  trigger '${trigger:-10 seconds}',
  checkpointLocation '${checkpoint:-/tmp/runnel-checkpoints/parquet}'
);

INSERT INTO out
SELECT tweet.id AS id, tweet.user.screen_name AS screen_name, tweet.lang AS lang,
       tweet.text AS text, ts, date_format(ts, 'yyyy-MM-dd-HH') AS hour
FROM tweets;
