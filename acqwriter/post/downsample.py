"""The values of a lower pyramid level: one block of a level downsampled by 2 per axis.

``mean`` sums in the narrowest integer type that holds the sum of the 2, 4 or 8 values
it adds (float64 for floats) and rounds integers half up, ``(sum + n // 2) // n``;
where a dimension is odd the last block is clipped to the pixels that exist
(implemented by adding the last element to itself, which leaves the mean unchanged).
``nearest`` keeps the first (top-left) pixel of each block.

Pure functions on arrays: the offline builder (:mod:`acqwriter.post.pyramid`) calls
them per output chunk, and any builder of the same levels must, so that the values do
not depend on who built them. Written with numpy by hand because this is the hot loop
of a pyramid build (the measured alternatives are in ``docs/decisions.md``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["downsample"]


# Accumulators: the narrowest integer type that holds the sum of the 2, 4 or 8 values a
# mean adds (uint8: 8 × 255 fits in 16 bits), so the adds move as few bytes as they can.
_ACCUMULATOR = {
    "uint8": np.uint16,
    "int8": np.int16,
    "uint16": np.uint32,
    "int16": np.int32,
    "uint32": np.uint64,
    "int32": np.int64,
    "float32": np.float64,
    "float64": np.float64,
}


def downsample(
    data: np.ndarray,
    factors: tuple[int, ...],
    method: str,
    *,
    scratch: dict[tuple[Any, ...], np.ndarray] | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Downsample ``data`` by a factor of 1 or 2 per axis (see module docstring).

    ``mean`` adds strided halves pairwise straight into a narrow accumulator (no
    widening copy; faster than a reshape-and-sum: ``docs/decisions.md``), and divides
    integers by the power of two with a shift: ``(sum + n // 2) >> log2(n)`` is
    ``(sum + n // 2) // n`` for every integer, negative ones included (both floor). An
    odd last element is added to itself, which is the clipped-edge mean. ``scratch``: a
    caller's (one thread's) cache for the accumulators, reused from call to call instead
    of faulting in fresh pages for every chunk; the result is then one of them, valid
    until the next call with the same cache. ``out``: where the result goes (of the
    result's shape and ``data``'s dtype), returned; no buffer of the result is made.
    """
    if method == "nearest":
        picked = data[tuple(slice(None, None, f) for f in factors)]
        if out is None:
            return picked
        np.copyto(out, picked)
        return out
    if method != "mean":
        raise ValueError(f"pyramid.method: expected 'mean' or 'nearest', got {method!r}")
    if any(f not in (1, 2) for f in factors):
        raise ValueError(f"factors: expected 1 or 2 per axis, got {factors}")
    if all(f == 1 for f in factors):
        if out is None:
            return data.copy()
        np.copyto(out, data)
        return out
    if _packs(data, factors):
        return _mean_2x2_packed(data, scratch, out)
    wide = _ACCUMULATOR[data.dtype.name]
    acc: np.ndarray = data
    for axis, factor in enumerate(factors):
        if factor == 1:
            continue
        n = acc.shape[axis]
        half = n // 2

        def part(sl: slice, _axis: int = axis, _ndim: int = acc.ndim) -> tuple[slice, ...]:
            index = [slice(None)] * _ndim
            index[_axis] = sl
            return tuple(index)

        shape = list(acc.shape)
        shape[axis] = half + n % 2
        summed = _buffer(scratch, ("acc", axis, *shape), shape, wide)
        np.add(
            acc[part(slice(0, 2 * half, 2))],
            acc[part(slice(1, n, 2))],
            out=summed[part(slice(0, half))],
            dtype=wide,
        )
        if n % 2:  # odd: the last block has one element; doubling it keeps its mean
            np.multiply(
                acc[part(slice(n - 1, n))], 2, out=summed[part(slice(half, half + 1))], dtype=wide
            )
        acc = summed
    n_total = math.prod(factors)
    if data.dtype.kind == "f":
        acc /= n_total
    else:
        acc += n_total // 2
        acc >>= n_total.bit_length() - 1
    result = _buffer(scratch, ("out", *acc.shape), acc.shape, data.dtype) if out is None else out
    np.copyto(result, acc, casting="unsafe")
    return result


# Unsigned types whose horizontal pairs are read as one integer twice as wide
_PACKED = {"uint8": np.uint16, "uint16": np.uint32}
_STRIP_ROWS = 64  # output rows per strip: the strip's temporaries stay in cache


def _packs(data: np.ndarray, factors: tuple[int, ...]) -> bool:
    """The 2×2 mean of a frame of 8 or 16-bit unsigned pixels, even in y and x, rows
    contiguous: :func:`_mean_2x2_packed` computes it."""
    return (
        data.dtype.name in _PACKED
        and factors[-2:] == (2, 2)
        and all(f == 1 and n == 1 for f, n in zip(factors[:-2], data.shape[:-2], strict=True))
        and data.shape[-2] % 2 == 0
        and data.shape[-1] % 2 == 0
        and data.strides[-1] == data.itemsize
    )


def _mean_2x2_packed(
    data: np.ndarray,
    scratch: dict[tuple[Any, ...], np.ndarray] | None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """The 2×2 mean, rounded half up, of a frame :func:`_packs` accepts: the same
    values as the general path, about 1.6× faster (``docs/decisions.md``).

    Each pair of neighbouring pixels is read as one integer of twice the width (its
    halves are the two pixels, in either byte order, and their sum does not care which
    is which); masking and shifting give both halves with contiguous, vectorised
    operations, where the general path adds strided columns. Rows are done in strips
    whose temporaries stay in cache."""
    shape = data.shape
    frame = data.reshape(shape[-2:])
    wide = _PACKED[data.dtype.name]
    half = np.iinfo(data.dtype).bits
    pairs = frame.view(wide)  # (h, w / 2): each element a horizontal pair
    h, w2 = pairs.shape
    if out is None:
        out = _buffer(
            scratch, ("out", *shape[:-2], h // 2, w2), (*shape[:-2], h // 2, w2), data.dtype
        )
    flat = out.reshape(h // 2, w2)
    rows = min(_STRIP_ROWS, h // 2)
    low = _buffer(scratch, ("low", rows, w2), (2 * rows, w2), wide)
    high = _buffer(scratch, ("high", rows, w2), (2 * rows, w2), wide)
    summed = _buffer(scratch, ("sum", rows, w2), (rows, w2), wide)
    mask = wide((1 << half) - 1)
    for y in range(0, h // 2, rows):
        n = min(rows, h // 2 - y)
        src, lo, hi, acc = pairs[2 * y : 2 * (y + n)], low[: 2 * n], high[: 2 * n], summed[:n]
        np.bitwise_and(src, mask, out=lo)
        np.right_shift(src, half, out=hi)
        lo += hi  # each pair's sum: at most 2 × (2**half - 1), fits
        np.add(lo[0::2], lo[1::2], out=acc)  # and the row below's: at most 4 × …, fits
        acc += 2
        acc >>= 2
        np.copyto(flat[y : y + n], acc, casting="unsafe")
    return out


def _buffer(
    scratch: dict[tuple[Any, ...], np.ndarray] | None,
    key: tuple[Any, ...],
    shape: Any,
    dtype: Any,
) -> np.ndarray:
    if scratch is None:
        return np.empty(shape, dtype)
    found = scratch.get(key)
    if found is None:
        found = scratch[key] = np.empty(shape, dtype)
    return found
