-- The benchmark's query over a topic holding the same tweets (see trending_files.sql).
CREATE TEMPORARY VIEW raw USING kafka OPTIONS (
  kafka.bootstrap.servers '${bootstrap}', subscribe '${topic}',
  startingOffsets 'earliest', endingOffsets 'latest',
  maxOffsetsPerTrigger '${maxOffsetsPerTrigger}'
);
CREATE TEMPORARY VIEW tweets AS
SELECT from_json(CAST(value AS STRING), 'entities STRUCT<hashtags: ARRAY<STRUCT<text: STRING>>>, timestamp_ms STRING') AS tweet
FROM raw;
CREATE TEMPORARY VIEW hashtags AS
SELECT explode(tweet.entities.hashtags) AS tag, timestamp_millis(CAST(tweet.timestamp_ms AS BIGINT)) AS ts
FROM tweets;
CREATE TEMPORARY VIEW out USING memory OPTIONS (outputMode 'append');
INSERT INTO out
SELECT window(ts, '1 minute') AS w, lower(tag.text) AS hashtag, count(*) AS tweets
FROM hashtags WATERMARK ts DELAY OF INTERVAL 30 SECONDS
GROUP BY window(ts, '1 minute'), lower(tag.text);
