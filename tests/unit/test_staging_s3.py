"""Staging on S3-compatible object storage (``RETL_STAGING_URL=s3://conn@bucket/prefix``) against a real
S3 server on 127.0.0.1: what one worker writes, another reads by URL, DuckDB included."""

from __future__ import annotations

import pyarrow as pa

from reverse_etl import staging
from reverse_etl.validate import superseded_rows
from sandbox.s3 import BUCKET, client


def _objects(endpoint: str, prefix: str) -> set[str]:
    pages = client(endpoint).get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return {item["Key"][len(prefix) :] for page in pages for item in page.get("Contents", [])}


def test_staged_files_live_in_the_bucket_and_read_back_by_url(s3_endpoint, s3_staging, tmp_path):
    folder = staging.sync_dir("voucherify_sync", "manual__2026-11-01T00:00:00+00:00", "customers")
    assert folder.protocol == "s3"
    schema = pa.schema([("_key", pa.string()), ("_updated_at", pa.int64()), ("email", pa.string())])
    with staging.ParquetSink(folder / "extract.parquet", schema) as sink:
        sink.write(pa.table({"_key": ["a", "b", "a"], "_updated_at": [1, 1, 2], "email": ["x", "y", "z"]}))
    staging.write_positions(folder / "rejected_rows.parquet", [1])
    with staging.JsonLinesSink(folder / "quarantine.jsonl") as quarantine:
        quarantine.write({"record_key": "b", "rules": ["email"]})

    prefix = s3_staging["RETL_STAGING_URL"].split(f"{BUCKET}/", 1)[1] + "/voucherify_sync/"
    assert _objects(s3_endpoint, prefix) == {
        "manual__2026-11-01T00_00_00_00_00/customers/extract.parquet",
        "manual__2026-11-01T00_00_00_00_00/customers/rejected_rows.parquet",
        "manual__2026-11-01T00_00_00_00_00/customers/quarantine.jsonl",
    }
    # what the next task gets in its manifest: URLs (with the connection id), nothing local
    manifest = {
        "valid_path": str(folder / "extract.parquet"),
        "rejected_rows_path": str(folder / "rejected_rows.parquet"),
    }
    assert manifest["valid_path"].startswith("s3://retl_staging@retl-staging/")
    rows = [r for batch in staging.iter_valid(manifest, batch_rows=2) for r in batch.to_pylist()]
    assert [r["email"] for r in rows] == ["x", "z"]
    # DuckDB reads the object through the connection's credentials (it cannot parse conn@bucket itself)
    assert superseded_rows(manifest["valid_path"], ["_key", "_updated_at", "email"]) == {0: "a"}
    assert not list(tmp_path.iterdir())  # nothing spilled to a local folder


def test_prune_removes_old_runs_from_the_bucket(s3_endpoint, s3_staging):
    folder = staging.sync_dir("salesfire_sync", "old-run", "customers")
    with staging.JsonLinesSink(folder / "quarantine.jsonl") as sink:
        sink.write({"record_key": "1"})
    prefix = s3_staging["RETL_STAGING_URL"].split(f"{BUCKET}/", 1)[1] + "/salesfire_sync/"
    assert _objects(s3_endpoint, prefix)
    assert staging.prune("salesfire_sync", keep_days=1, now=4102444800) == ["old-run"]  # year 2100
    assert not _objects(s3_endpoint, prefix)
