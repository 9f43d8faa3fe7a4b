"""Realistic synthetic frames, precomputed, with a per-frame stamp.

Content: a smooth uneven background (illumination falloff plus camera offset), a few
hundred cell-like Gaussian blobs of varied size and brightness that drift from frame to
frame, and shot noise. Generating that per frame would cap a simulated camera far
below 1 GB/s, so a *bank* of distinct frames is computed once (deterministically from
a seed) and frame ``i`` is ``bank[i % len(bank)]`` with its stamp.

Shot noise uses the normal approximation of Poisson noise (λ + √λ·N(0, 1), clipped at
0), ~10× cheaper than ``Generator.poisson`` and indistinguishable at the signal levels
used here (λ ≳ 20 counts for uint16, scaled for uint8).

**Frame stamp.** The first 8 pixels in C order (row 0, columns 0–7) hold the frame
index, one byte per pixel, little-endian: ``index = Σ frame.flat[k] << (8·k)``, each of
those pixels being 0–255 whatever the dtype. :func:`read_stamp` decodes it; a test
reads back a written frame, decodes its index and compares every other pixel against
:meth:`FrameBank.frame` of that index — proving each frame is the right one in the
right place. Frames need at least 8 pixels.
"""

from __future__ import annotations

import numpy as np

__all__ = ["STAMP_PIXELS", "FrameBank", "read_stamp", "write_stamp"]

STAMP_PIXELS = 8
_SHIFTS = np.arange(STAMP_PIXELS, dtype=np.uint64) * np.uint64(8)


def write_stamp(frame: np.ndarray, index: int) -> None:
    """Encode ``index`` (0 ≤ index < 2**64) into the first 8 pixels of ``frame``, in place."""
    flat = frame.reshape(-1)
    flat[:STAMP_PIXELS] = [(index >> (8 * k)) & 0xFF for k in range(STAMP_PIXELS)]


def read_stamp(frame: np.ndarray) -> int:
    """Decode the frame index written by :func:`write_stamp`."""
    first = np.asarray(frame).reshape(-1)[:STAMP_PIXELS].astype(np.uint64)
    if first.size < STAMP_PIXELS or (first > 255).any():
        raise ValueError("frame carries no valid stamp (first 8 pixels must be 0-255)")
    return int(np.bitwise_or.reduce(first << _SHIFTS))


def _render(
    shape: tuple[int, int], dtype: np.dtype, rng: np.random.Generator, n: int
) -> np.ndarray:
    h, w = shape
    top = 4000.0 if dtype.itemsize > 1 else 200.0
    offset = 100.0 if dtype.itemsize > 1 else 10.0
    yy = np.linspace(-1, 1, h, dtype=np.float32)[:, None]
    xx = np.linspace(-1, 1, w, dtype=np.float32)[None, :]
    background = offset + 0.08 * top * (1.0 - 0.35 * (yy**2 + xx**2))
    n_cells = max(3, int(h * w / 12_000))
    cy = rng.uniform(0, h, n_cells)
    cx = rng.uniform(0, w, n_cells)
    sigma = rng.uniform(3, 12, n_cells) * max(1.0, min(h, w) / 1024) ** 0.5
    amp = rng.uniform(0.2, 1.0, n_cells) * top
    drift = rng.normal(0, 1.5, (n_cells, 2))
    bank = np.empty((n, h, w), dtype=dtype)
    info = np.iinfo(dtype)
    for i in range(n):
        lam = background.copy()
        py = cy + drift[:, 0] * i
        px = cx + drift[:, 1] * i
        for y0, x0, s, a in zip(py, px, sigma, amp, strict=True):
            r = int(4 * s) + 1
            ys = slice(max(0, int(y0) - r), min(h, int(y0) + r + 1))
            xs = slice(max(0, int(x0) - r), min(w, int(x0) + r + 1))
            if ys.start >= ys.stop or xs.start >= xs.stop:
                continue
            gy = np.exp(-((np.arange(ys.start, ys.stop, dtype=np.float32) - y0) ** 2) / (2 * s * s))
            gx = np.exp(-((np.arange(xs.start, xs.stop, dtype=np.float32) - x0) ** 2) / (2 * s * s))
            lam[ys, xs] += a * gy[:, None] * gx[None, :]
        noisy = lam + np.sqrt(lam) * rng.standard_normal((h, w), dtype=np.float32)
        np.clip(noisy, info.min, info.max, out=noisy)
        bank[i] = np.rint(noisy).astype(dtype)
    return bank


class FrameBank:
    """A deterministic bank of realistic frames; ``frame(i)`` is frame i with its stamp.

    Two banks built with the same ``(shape, dtype, size, seed)`` are identical, so a test
    (or another process) can regenerate exactly what a simulated camera produced.
    """

    def __init__(
        self,
        shape: tuple[int, int],
        dtype: str | np.dtype = "uint16",
        *,
        size: int | None = None,
        seed: int = 0,
    ) -> None:
        self.shape = (int(shape[0]), int(shape[1]))
        self.dtype = np.dtype(dtype)
        if self.dtype.name not in ("uint8", "uint16"):
            raise ValueError(f"dtype: expected uint8 or uint16, got {self.dtype.name}")
        if self.shape[0] < 1 or self.shape[1] < 1 or self.shape[0] * self.shape[1] < STAMP_PIXELS:
            raise ValueError(f"shape: expected at least {STAMP_PIXELS} pixels, got {self.shape}")
        frame_bytes = self.shape[0] * self.shape[1] * self.dtype.itemsize
        if size is None:  # ~128 MiB of bank, between 2 and 8 frames
            size = int(min(8, max(2, (128 * 2**20) // frame_bytes)))
        self.size = size
        self.seed = seed
        self.frames = _render(self.shape, self.dtype, np.random.default_rng(seed), size)

    def frame(self, index: int) -> np.ndarray:
        """A new array: frame ``index`` exactly as the simulated camera delivers it."""
        out = self.frames[index % self.size].copy()
        write_stamp(out, index)
        return out

    def fill(self, out: np.ndarray, index: int) -> None:
        """Write frame ``index`` into ``out`` (no allocation)."""
        np.copyto(out, self.frames[index % self.size])
        write_stamp(out, index)
