-- (5) User sessions: a user's tweets less than a gap (5 s) apart form one session
--   (Spark's session_window). Append mode: a session is written once, when the
--   watermark passes its end; sessions that grow towards each other merge, across batches.
--   runnel sql -f examples/tweets/sessions.sql [-d gap='30 seconds'] [-d delay='30 seconds']
-- The defaults suit `runnel demo tweets --rate 2000`: its 5,000 users tweet every 2.5 s
-- on average, so a 5 s gap closes sessions of a few tweets each, and with a 2 s watermark
-- delay they are printed about 7 s after their last tweet. A 30 s gap at that rate never
-- closes a session (a user is never quiet that long).
SET bootstrap = 127.0.0.1:9092;
SET topic = tweets;
SET startingOffsets = latest;

CREATE TEMPORARY VIEW tweets_raw USING kafka OPTIONS (
  kafka.bootstrap.servers '${bootstrap}', subscribe '${topic}',
  startingOffsets '${startingOffsets}', endingOffsets '${endingOffsets:-}',
  maxOffsetsPerTrigger '${maxOffsetsPerTrigger:-1000000}'
);

-- from_json needs only the fields the query uses.
CREATE TEMPORARY VIEW tweets AS
SELECT from_json(CAST(value AS STRING), 'id BIGINT, user STRUCT<id: BIGINT>') AS tweet, timestamp AS ts
FROM tweets_raw;

CREATE TEMPORARY VIEW out USING console OPTIONS (
  outputMode 'append', truncate 'false', numRows '${numRows:-10}', trigger '${trigger:-5 seconds}'
);

INSERT INTO out
SELECT s.start AS session_start, s.end AS session_end, user_id, tweets, last_tweet
FROM (
  SELECT session_window(ts, '${gap:-5 seconds}') AS s, tweet.user.id AS user_id,
         count(*) AS tweets, max(ts) AS last_tweet
  FROM tweets WATERMARK ts DELAY OF INTERVAL ${delay:-2 SECONDS}
  GROUP BY session_window(ts, '${gap:-5 seconds}'), tweet.user.id
) sessions;
