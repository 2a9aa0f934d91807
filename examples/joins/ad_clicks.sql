-- Stream-stream inner join: ad impressions with the clicks that follow them within a
-- minute. Both topics are keyed by ad id; the value is the event id.
--   runnel sql -f examples/joins/ad_clicks.sql [-d bootstrap=HOST:PORT]
--   then: printf 'ad1:imp-1\n' | kcat -b 127.0.0.1:9092 -t impressions -P -K:
--         printf 'ad1:click-1\n' | kcat -b 127.0.0.1:9092 -t clicks -P -K:
-- Spark's rules: each side declares a watermark, and the time bound in the ON clause
-- (click_time between imp_time and imp_time + 1 minute) lets both sides' state be
-- evicted once the watermark passes it. Output mode is append.
SET bootstrap = 127.0.0.1:9092;
SET startingOffsets = latest;

CREATE TEMPORARY VIEW impressions_raw USING kafka OPTIONS (
  kafka.bootstrap.servers '${bootstrap}',
  subscribe '${impressionsTopic:-impressions}',
  startingOffsets '${startingOffsets}',
  endingOffsets '${endingOffsets:-}',
  maxOffsetsPerTrigger '${maxOffsetsPerTrigger:-100000}'
);
CREATE TEMPORARY VIEW clicks_raw USING kafka OPTIONS (
  kafka.bootstrap.servers '${bootstrap}',
  subscribe '${clicksTopic:-clicks}',
  startingOffsets '${startingOffsets}',
  endingOffsets '${endingOffsets:-}',
  maxOffsetsPerTrigger '${maxOffsetsPerTrigger:-100000}'
);

CREATE TEMPORARY VIEW impressions AS
SELECT CAST(key AS STRING) AS imp_ad, CAST(value AS STRING) AS imp_id, timestamp AS imp_time
FROM impressions_raw;
CREATE TEMPORARY VIEW clicks AS
SELECT CAST(key AS STRING) AS click_ad, CAST(value AS STRING) AS click_id, timestamp AS click_time
FROM clicks_raw;

CREATE TEMPORARY VIEW out USING console OPTIONS (truncate 'false');

INSERT INTO out
SELECT imp_ad AS ad, imp_id, click_id, imp_time, click_time
FROM impressions WATERMARK imp_time DELAY OF INTERVAL ${delay:-30 SECONDS}
JOIN clicks WATERMARK click_time DELAY OF INTERVAL ${delay:-30 SECONDS}
  ON imp_ad = click_ad
 AND click_time BETWEEN imp_time AND imp_time + INTERVAL 1 MINUTE;
