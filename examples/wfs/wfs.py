"""A reference WFS (workflow summarizer) job on Spark, over kbackup's backup files.

Not Sunbird's product: an example and a test instrument, kept short. It is run the way Sunbird's
JobExecutor is, one job per group of Kafka partitions (`kbackup plan --py-file`):

    spark-submit --master local[2] examples/wfs/wfs.py --model wfs --config '<job config JSON>'

The job config is Sunbird's shape:

    {"search": {"type": "local" | "s3", "queries": [{"bucket": "/data/store", "prefix": "unique/raw/",
                "startDate": "2020-02-01", "endDate": "2020-02-03", "partitions": [0, 1]}]},
     "model": "wfs", "output": {"dir": "/tmp/wfs-out"}, "idleTime": 600}

Files are selected as Sunbird's data fetcher does: for each date from startDate (or endDate minus
`delta` days) to endDate, every key starting with `<prefix><date>`; with `partitions`, only keys
matching `(\\d{4})-(\\d{2})-(\\d{2})-<p>-` for one of them. `local` reads `file://<bucket>/…`,
`s3` reads `s3a://<bucket>/…`. Files named `….parquet` (kbackup's `file_format = "parquet"`)
are read as Parquet, each event's fields through its Variant column (`variant_get`; Spark 4.1+),
the rest as JSON lines. Summaries follow WorkFlowSummaryModel's grouping: LOG, AUDIT and
SEARCH events are dropped; events are grouped by (context.did, context.channel,
context.pdata.id), ordered by ets, and cut into sessions at `idleTime` seconds of silence; one
summary per session. The output (JSON lines) goes to `<output.dir>/partitions-<first>-<last>`,
or `<output.dir>/all` without a partition filter.
"""
import argparse
import datetime
import json
import re

from pyspark.sql import SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import LongType, StringType, StructField, StructType

DROPPED = ["LOG", "AUDIT", "SEARCH"]
SCHEMA = StructType([
    StructField("eid", StringType()),
    StructField("ets", LongType()),
    StructField("mid", StringType()),
    StructField("context", StructType([
        StructField("did", StringType()),
        StructField("channel", StringType()),
        StructField("pdata", StructType([StructField("id", StringType())])),
    ])),
])


def dates(q):
    end = datetime.date.fromisoformat(q["endDate"])
    start = datetime.date.fromisoformat(q["startDate"]) if q.get("startDate") else end - datetime.timedelta(days=int(q.get("delta", 0)))
    return [(start + datetime.timedelta(days=i)).isoformat() for i in range((end - start).days + 1)]


def list_files(spark, search):
    """Every file the queries select, through Hadoop's file system API (file:// and s3a:// alike)."""
    jvm, conf = spark._jvm, spark._jsc.hadoopConfiguration()
    scheme = {"local": "file://", "s3": "s3a://"}[search.get("type", "local")]
    paths = []
    for q in search["queries"]:
        wanted = q.get("partitions")
        pattern = re.compile(r"(\d{4})-(\d{2})-(\d{2})-(%s)-" % "|".join(str(p) for p in wanted)) if wanted is not None else None
        for d in dates(q):
            key_prefix = q.get("prefix", "") + d
            directory, _, name_prefix = key_prefix.rpartition("/")
            base = jvm.org.apache.hadoop.fs.Path(scheme + q["bucket"].rstrip("/") + "/" + directory)
            fs = base.getFileSystem(conf)
            if not fs.exists(base):
                continue
            for status in fs.listStatus(base):
                p = status.getPath()
                key = directory + "/" + p.getName()
                if status.isFile() and p.getName().startswith(name_prefix) and (pattern is None or pattern.search(key)):
                    paths.append(p.toString())
    return sorted(set(paths)), wanted_tag(search)


def wanted_tag(search):
    parts = sorted({p for q in search["queries"] for p in (q.get("partitions") or [])})
    return f"partitions-{parts[0]}-{parts[-1]}" if parts else "all"


def events_of(spark, paths):
    """The fields WFS reads of every event in `paths`: JSON lines and Parquet files alike."""
    frames = []
    text = [p for p in paths if not p.endswith(".parquet")]
    columnar = [p for p in paths if p.endswith(".parquet")]
    if text:
        frames.append(spark.read.schema(SCHEMA).json(text)
                      .select("eid", F.col("context.did").alias("did"), F.col("context.channel").alias("channel"),
                              F.col("context.pdata.id").alias("pdata_id"), "ets", "mid"))
    if columnar:
        def field(path, kind):
            # Shredded fields are read from their own columns; the rest from the Variant.
            return F.expr(f"variant_get(event, '$.{path}', '{kind}')")
        frames.append(spark.read.parquet(*columnar).where("event is not null")
                      .select(field("eid", "string").alias("eid"), field("context.did", "string").alias("did"),
                              field("context.channel", "string").alias("channel"), field("context.pdata.id", "string").alias("pdata_id"),
                              field("ets", "bigint").alias("ets"), field("mid", "string").alias("mid")))
    events = frames[0]
    for f in frames[1:]:
        events = events.unionByName(f)
    return events


def summaries(spark, paths, idle_secs):
    if not paths:
        return spark.createDataFrame([], "did string, channel string, pdata_id string, start long, end long, events long, time_spent double")
    events = (events_of(spark, paths)
              .filter(~F.col("eid").isin(DROPPED))
              .select("did", "channel", "pdata_id", "ets", "mid"))
    by_user = Window.partitionBy("did", "channel", "pdata_id").orderBy("ets", "mid")
    gap = F.col("ets") - F.lag("ets").over(by_user)
    events = events.withColumn("new_session", F.when(gap.isNull() | (gap > idle_secs * 1000), 1).otherwise(0))
    events = events.withColumn("session", F.sum("new_session").over(by_user.rowsBetween(Window.unboundedPreceding, 0)))
    return (events.groupBy("did", "channel", "pdata_id", "session")
            .agg(F.min("ets").alias("start"), F.max("ets").alias("end"), F.count(F.lit(1)).alias("events"))
            .withColumn("time_spent", (F.col("end") - F.col("start")) / 1000.0)
            .drop("session"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="wfs")
    ap.add_argument("--config", required=True, help="the job config, as JSON text")
    a = ap.parse_args()
    config = json.loads(a.config)
    spark = SparkSession.builder.appName(f"{a.model} (kbackup example)").getOrCreate()
    paths, tag = list_files(spark, config["search"])
    out = config["output"]["dir"].rstrip("/") + "/" + tag
    result = summaries(spark, paths, int(config.get("idleTime", 600)))
    result.coalesce(1).write.mode("overwrite").json(out)
    print(json.dumps({"files": len(paths), "output": out}))
    spark.stop()


if __name__ == "__main__":
    main()
