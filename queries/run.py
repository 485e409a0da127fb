#!/usr/bin/env python3
"""Runs Flowdar's query pack (the *.sql files beside this script) over a
dataset written by `flowdar export --format parquet --dataset DIR`, with
DuckDB or Spark (local mode), and prints {query name: [row, ...]} as JSON.

    python3 queries/run.py duckdb DIR
    target/pyspark/bin/python queries/run.py spark DIR

Both engines see the same two views, `calls` and `events`, with the
partition columns host, run and phase read as strings.
"""
import decimal
import json
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent


def queries():
    return {p.stem: p.read_text() for p in sorted(HERE.glob("*.sql"))}


def plain(v):
    # Sums of unsigned 64-bit columns come back as Decimal (Spark) or big
    # ints (DuckDB): print them as exact integers.
    if isinstance(v, decimal.Decimal):
        return int(v) if v == v.to_integral_value() else str(v)
    return v


def run_duckdb(root):
    import duckdb

    con = duckdb.connect()
    for table in ("calls", "events"):
        glob = f"{root}/{table}/*/*/*/*.parquet"
        con.execute(
            f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{glob}', "
            "hive_partitioning = true, hive_types_autocast = false)"
        )
    out = {}
    for name, sql in queries().items():
        cur = con.execute(sql)
        cols = [d[0] for d in cur.description]
        out[name] = [dict(zip(cols, map(plain, row))) for row in cur.fetchall()]
    return out


def run_spark(root):
    from pyspark.sql import SparkSession

    spark = (
        SparkSession.builder.master("local[2]")
        .appName("flowdar-query-pack")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.sources.partitionColumnTypeInference.enabled", "false")
        .config("spark.sql.shuffle.partitions", "4")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    try:
        for table in ("calls", "events"):
            path = f"{root}/{table}"
            spark.read.option("basePath", path).parquet(path).createOrReplaceTempView(table)
        out = {}
        for name, sql in queries().items():
            rows = spark.sql(sql).collect()
            out[name] = [{k: plain(v) for k, v in r.asDict().items()} for r in rows]
        return out
    finally:
        spark.stop()


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("duckdb", "spark"):
        sys.exit("usage: run.py duckdb|spark DATASET_DIR")
    engine, root = sys.argv[1], pathlib.Path(sys.argv[2]).resolve()
    if not (root / "calls").is_dir():
        sys.exit(f"{root}: no calls/ directory: not a flowdar dataset")
    result = run_duckdb(root) if engine == "duckdb" else run_spark(root)
    json.dump(result, sys.stdout, indent=1, sort_keys=True)
    print()


if __name__ == "__main__":
    main()
