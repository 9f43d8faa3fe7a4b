"""Helpers for tests against a real S3-compatible server on the loopback (moto's server
mode): start one, open a prefix of a bucket as obstore or zarr-python see it, list its
objects and its unfinished multipart uploads. The test credentials are ``test``/``test``
in region ``us-east-1``."""

from __future__ import annotations

from typing import Any

CREDENTIALS = {"access_key_id": "test", "secret_access_key": "test", "region": "us-east-1"}


def start_server(bucket: str, port: int = 0) -> tuple[Any, str]:
    """A moto S3 server on 127.0.0.1 (a free port by default) holding ``bucket``; the
    server (``.stop()`` it) and its endpoint URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    client(endpoint).create_bucket(Bucket=bucket)
    return server, endpoint


def client(endpoint: str) -> Any:
    """A boto3 S3 client (what lists uploads; obstore does not)."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=CREDENTIALS["access_key_id"],
        aws_secret_access_key=CREDENTIALS["secret_access_key"],
        region_name=CREDENTIALS["region"],
    )


def store(endpoint: str, prefix: str, bucket: str = "lab") -> Any:
    """The obstore store of ``prefix`` in ``bucket``."""
    import obstore.store

    return obstore.store.S3Store(
        bucket, prefix=prefix, endpoint=endpoint, client_options={"allow_http": True},
        **CREDENTIALS,
    )  # fmt: skip


def group(endpoint: str, prefix: str, bucket: str = "lab") -> Any:
    """The Zarr group at ``prefix``, read-only, as zarr-python opens it."""
    import zarr

    found = zarr.storage.ObjectStore(store(endpoint, prefix, bucket), read_only=True)
    return zarr.open_group(store=found, mode="r")


def keys(endpoint: str, prefix: str, bucket: str = "lab") -> list[str]:
    """Every object's key under ``prefix`` (relative to it)."""
    import obstore

    return [m["path"] for batch in obstore.list(store(endpoint, prefix, bucket)) for m in batch]


def uploads(endpoint: str, prefix: str, bucket: str = "lab") -> list[str]:
    """The keys of the multipart uploads in progress under ``prefix`` (what the bucket
    bills for though they hold no object)."""
    found = client(endpoint).list_multipart_uploads(Bucket=bucket, Prefix=prefix.rstrip("/") + "/")
    return [u["Key"] for u in found.get("Uploads", [])]
