-- The benchmark's live run: the trending query on a topic being written, update mode,
-- each batch's changed counts to a topic (see latency_probe.py).
CREATE TEMPORARY VIEW raw USING kafka OPTIONS (
  kafka.bootstrap.servers '${bootstrap}', subscribe '${topic}', startingOffsets 'latest'
);
CREATE TEMPORARY VIEW tweets AS
SELECT from_json(CAST(value AS STRING), 'entities STRUCT<hashtags: ARRAY<STRUCT<text: STRING>>>, timestamp_ms STRING') AS tweet
FROM raw;
CREATE TEMPORARY VIEW hashtags AS
SELECT explode(tweet.entities.hashtags) AS tag, timestamp_millis(CAST(tweet.timestamp_ms AS BIGINT)) AS ts
FROM tweets;
CREATE TEMPORARY VIEW out USING kafka OPTIONS (
  kafka.bootstrap.servers '${bootstrap}', topic '${outputTopic}', outputMode 'update',
  kafka.linger.ms '0'
);
INSERT INTO out
SELECT hashtag AS key, to_json(named_struct('window_start', CAST(w.start AS STRING), 'tweets', tweets)) AS value
FROM (
  SELECT window(ts, '1 minute') AS w, lower(tag.text) AS hashtag, count(*) AS tweets
  FROM hashtags WATERMARK ts DELAY OF INTERVAL 30 SECONDS
  GROUP BY window(ts, '1 minute'), lower(tag.text)
) counts;
