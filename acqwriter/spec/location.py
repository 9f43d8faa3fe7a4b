"""Where a dataset goes when it is not a filesystem path: an object-store URL.

``out="s3://bucket/prefix/run.ome.zarr"`` names a dataset under a prefix of a bucket
(S3 and S3-compatible stores). :class:`ObjectURL` is that URL as a string that also
answers what the rest of acqwriter asks of an ``out`` (its ``name``, ``/`` for an image's
place inside it), and is never a filesystem path: nothing can open it as a file by
mistake. :func:`parse_object_url` checks it, naming what is wrong.
"""

from __future__ import annotations

from typing import Any

from pydantic_core import core_schema

from acqwriter.validation import SpecError

__all__ = ["OBJECT_SCHEMES", "ObjectURL", "as_location", "parse_object_url"]

# the object stores acqwriter writes to (acqwriter.store.objects)
OBJECT_SCHEMES = ("s3",)


class ObjectURL(str):
    """``scheme://bucket/prefix`` (see the module docstring)."""

    __slots__ = ()

    @property
    def scheme(self) -> str:
        return self.split("://", 1)[0]

    @property
    def bucket(self) -> str:
        return self.split("://", 1)[1].split("/", 1)[0]

    @property
    def prefix(self) -> str:
        return self.split("://", 1)[1].split("/", 1)[1]

    @property
    def name(self) -> str:
        return self.rsplit("/", 1)[-1]

    def __truediv__(self, other: object) -> ObjectURL:
        return ObjectURL(f"{self}/{str(other).strip('/')}")

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> core_schema.CoreSchema:
        return core_schema.is_instance_schema(
            cls, serialization=core_schema.plain_serializer_function_ser_schema(str)
        )


def parse_object_url(text: str) -> ObjectURL:
    """``text`` as an :class:`ObjectURL`, or ValueError saying what is expected."""
    scheme, _, rest = text.partition("://")
    if scheme.lower() not in OBJECT_SCHEMES:
        raise ValueError(
            f"{scheme!r} URLs are not supported: give a local or mounted filesystem path "
            f"or an s3://bucket/prefix URL, got {text[:80]!r}"
        )
    bucket, _, prefix = rest.partition("/")
    prefix = prefix.strip("/")
    if not bucket:
        raise ValueError(f"expected s3://BUCKET/prefix, got {text[:80]!r} (no bucket)")
    if not prefix:
        raise ValueError(
            f"expected s3://bucket/PREFIX: a dataset needs a prefix of its own in the bucket, "
            f"got {text[:80]!r}"
        )
    parts = prefix.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"expected a prefix without empty, '.' or '..' parts, got {prefix!r}")
    return ObjectURL(f"{scheme.lower()}://{bucket}/{prefix}")


def as_location(value: Any) -> Any:
    """``value`` as an :class:`ObjectURL` when it is a URL string (a path's ``//`` would
    collapse), else unchanged (a path; the spec checks it). A bad URL is a
    :class:`SpecError` naming ``out``."""
    if isinstance(value, str) and not isinstance(value, ObjectURL) and "://" in value:
        try:
            return parse_object_url(value)
        except ValueError as exc:
            raise SpecError(f"out: {exc}") from None
    return value
