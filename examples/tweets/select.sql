-- (1) The notebook's query: id, user name and text of every tweet, to the console.
--   runnel sql -f examples/tweets/select.sql [-b HOST:PORT] [-d startingOffsets=earliest]
-- A batch every 2 s; the console shows its first 10 rows, strings cut to 20 characters
-- (Spark's show(): -d numRows=N, or truncate 'false' below for whole texts).
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

CREATE TEMPORARY VIEW out USING console OPTIONS (
  truncate 'true', numRows '${numRows:-10}', trigger '${trigger:-2 seconds}'
);

INSERT INTO out
SELECT tweet.id AS id, tweet.user.name AS name, tweet.text AS text
FROM tweets;
