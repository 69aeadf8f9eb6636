"""An S3-compatible object store on 127.0.0.1 for staging shared by several workers: moto's server.

``python -m sandbox.s3 [--port P] [--bucket retl-staging]`` creates the bucket and prints one JSON line
(``{"endpoint_url": ..., "bucket": ...}``) once it answers. Everything lives in the process's memory: it is
gone when the process stops, like the staging a test needs.
"""

from __future__ import annotations

import argparse
import json
import signal
import threading

from sandbox.env import conn_json

BUCKET = "retl-staging"
CONN_ID = "retl_staging"
# moto accepts any key; AWS's SDKs still want one to sign with
ACCESS_KEY, SECRET_KEY, REGION = "sandbox-access-key", "sandbox-secret-key", "us-east-1"


def staging_env(endpoint_url: str, bucket: str = BUCKET, prefix: str = "staging") -> dict[str, str]:
    """``RETL_STAGING_URL`` on the bucket and the Airflow connection it names (type ``aws``)."""
    return {
        "RETL_STAGING_URL": f"s3://{CONN_ID}@{bucket}/{prefix}",
        f"AIRFLOW_CONN_{CONN_ID.upper()}": conn_json(
            "aws",
            login=ACCESS_KEY,
            password=SECRET_KEY,
            extra={"endpoint_url": endpoint_url, "region_name": REGION},
        ),
    }


def client(endpoint_url: str):
    """A boto3 S3 client on the server (what the tests list objects with)."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name=REGION,
    )


def create_bucket(endpoint_url: str, bucket: str) -> None:
    client(endpoint_url).create_bucket(Bucket=bucket)


def main(argv: list[str] | None = None) -> None:
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per request otherwise

    parser = argparse.ArgumentParser(prog="python -m sandbox.s3", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=0, help="port to listen on, 0 for any free one")
    parser.add_argument("--bucket", default=BUCKET, help="bucket to create")
    args = parser.parse_args(argv)
    server = ThreadedMotoServer(ip_address=args.host, port=args.port, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint_url = f"http://{host}:{port}"
    create_bucket(endpoint_url, args.bucket)
    print(json.dumps({"endpoint_url": endpoint_url, "bucket": args.bucket}), flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.stop()


if __name__ == "__main__":
    main()
