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
) -> np.ndarray:
    """Downsample ``data`` by a factor of 1 or 2 per axis (see module docstring).

    ``mean`` adds strided halves pairwise straight into a narrow accumulator (no
    widening copy; faster than a reshape-and-sum: ``docs/decisions.md``), and divides
    integers by the power of two with a shift: ``(sum + n // 2) >> log2(n)`` is
    ``(sum + n // 2) // n`` for every integer, negative ones included (both floor). An
    odd last element is added to itself, which is the clipped-edge mean. ``scratch``: a
    caller's (one thread's) cache for the accumulators, reused from call to call instead
    of faulting in fresh pages for every chunk; the result is then one of them, valid
    until the next call with the same cache.
    """
    if method == "nearest":
        return data[tuple(slice(None, None, f) for f in factors)]
    if method != "mean":
        raise ValueError(f"pyramid.method: expected 'mean' or 'nearest', got {method!r}")
    if any(f not in (1, 2) for f in factors):
        raise ValueError(f"factors: expected 1 or 2 per axis, got {factors}")
    if all(f == 1 for f in factors):
        return data.copy()
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
    result = _buffer(scratch, ("out", *acc.shape), acc.shape, data.dtype)
    np.copyto(result, acc, casting="unsafe")
    return result


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
