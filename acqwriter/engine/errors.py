"""What a producer is told when a frame cannot be taken."""

from __future__ import annotations

__all__ = ["FrameError", "StreamError"]


class StreamError(RuntimeError):
    """The stream cannot take more frames (closed, full, or its writer failed)."""


class FrameError(ValueError):
    """A frame does not match the stream (shape, dtype or index); nothing was written."""
