-- (2) Trending hashtags per minute, with a watermark, to a topic (and the console).
--   runnel sql -f examples/tweets/trending.sql [-d outputTopic=trending] [-d minTweets=N]
--     [-d watermarkDelay='10 MINUTES'] (a tweet older than the watermark is dropped: the
--     generator's very late tweets are 3 minutes late, so a delay over that keeps them all)
-- The console echo (echoConsole) shows key and value cut to 20 characters, as Spark's
-- show() does: the count comes first in the JSON so that it shows.
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

-- One row per hashtag occurrence (explode is Spark's name; unnest works too).
CREATE TEMPORARY VIEW hashtags AS
SELECT explode(tweet.entities.hashtags) AS tag, ts FROM tweets;

CREATE TEMPORARY VIEW out USING kafka OPTIONS (
  kafka.bootstrap.servers '${bootstrap}',
  topic '${outputTopic:-trending}',
  outputMode 'update',
  trigger '${trigger:-5 seconds}',
  echoConsole 'true',
  checkpointLocation '${checkpoint:-/tmp/runnel-checkpoints/trending}'
);

INSERT INTO out
SELECT hashtag AS key,
       to_json(named_struct('tweets', tweets, 'hashtag', hashtag,
                            'window_start', CAST(w.start AS STRING), 'window_end', CAST(w.end AS STRING))) AS value
FROM (
  SELECT window(ts, '1 minute') AS w, lower(tag.text) AS hashtag, count(*) AS tweets
  FROM hashtags WATERMARK ts DELAY OF INTERVAL ${watermarkDelay:-30 SECONDS}
  GROUP BY window(ts, '1 minute'), lower(tag.text)
) counts
WHERE tweets >= ${minTweets:-1};
