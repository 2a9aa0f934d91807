-- (3) Tweets per language, complete mode (the whole table every batch).
--   runnel sql -f examples/tweets/languages.sql
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

CREATE TEMPORARY VIEW out USING console OPTIONS (outputMode 'complete', trigger '${trigger:-5 seconds}');

INSERT INTO out
SELECT tweet.lang AS lang, count(*) AS tweets, approx_count_distinct(tweet.user.id) AS users
FROM tweets
GROUP BY tweet.lang
ORDER BY tweets DESC, lang;
