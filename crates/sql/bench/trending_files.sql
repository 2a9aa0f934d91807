-- The benchmark's query over a directory of JSON-lines files (one tweet per line):
-- trending hashtags per minute with a 30 s watermark, append mode. Same query as
-- spark_trending.py runs on the same files.
CREATE TEMPORARY VIEW lines USING text OPTIONS (
  path '${dir}', maxFilesPerTrigger '${maxFilesPerTrigger:-1}'
);
CREATE TEMPORARY VIEW tweets AS
SELECT from_json(value, 'entities STRUCT<hashtags: ARRAY<STRUCT<text: STRING>>>, timestamp_ms STRING') AS tweet
FROM lines;
CREATE TEMPORARY VIEW hashtags AS
SELECT explode(tweet.entities.hashtags) AS tag, timestamp_millis(CAST(tweet.timestamp_ms AS BIGINT)) AS ts
FROM tweets;
CREATE TEMPORARY VIEW out USING memory OPTIONS (outputMode 'append');
INSERT INTO out
SELECT window(ts, '1 minute') AS w, lower(tag.text) AS hashtag, count(*) AS tweets
FROM hashtags WATERMARK ts DELAY OF INTERVAL 30 SECONDS
GROUP BY window(ts, '1 minute'), lower(tag.text);
