"""The benchmark's query on Apache Spark (pyspark 4.x, local mode): the same JSON-lines
files, read as a stream one file per trigger (maxFilesPerTrigger 1), trending hashtags
per minute with a 30 s watermark, append mode, the no-op sink. Prints one JSON line:
rows, batches, wall seconds of the streaming query, per-batch durations (ms)."""
import json
import sys
import tempfile
import time

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

src, cores = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 2
spark = (
    SparkSession.builder.master(f"local[{cores}]")
    .appName("runnel-bench-trending")
    .config("spark.sql.shuffle.partitions", str(cores))
    .config("spark.sql.streaming.numRecentProgressUpdates", "100000")
    .config("spark.driver.memory", "4g")
    .config("spark.ui.enabled", "false")
    .getOrCreate()
)
spark.sparkContext.setLogLevel("ERROR")
lines = spark.readStream.option("maxFilesPerTrigger", 1).text(src)
tweets = lines.select(
    F.from_json(
        "value", "entities STRUCT<hashtags: ARRAY<STRUCT<text: STRING>>>, timestamp_ms STRING"
    ).alias("tweet")
)
tags = tweets.select(
    F.explode("tweet.entities.hashtags").alias("tag"),
    F.timestamp_millis(F.col("tweet.timestamp_ms").cast("bigint")).alias("ts"),
)
counts = (
    tags.withWatermark("ts", "30 seconds")
    .groupBy(F.window("ts", "1 minute"), F.lower("tag.text").alias("hashtag"))
    .count()
)
with tempfile.TemporaryDirectory() as ck:
    started = time.time()
    q = (
        counts.writeStream.outputMode("append")
        .format("noop")
        .option("checkpointLocation", ck)
        .trigger(availableNow=True)
        .start()
    )
    q.awaitTermination()
    wall = time.time() - started
    progress = q.recentProgress
print(
    json.dumps(
        {
            "rows": sum(p["numInputRows"] for p in progress),
            "batches": sum(1 for p in progress if p["numInputRows"] > 0),
            "wall_s": wall,
            "batch_ms": [p["durationMs"]["triggerExecution"] for p in progress if p["numInputRows"] > 0],
        }
    )
)
spark.stop()
