"""Union-find over channel classes: growable numpy arrays, vectorised unions.

Unions come in whole layouts (a residual Add couples C channels at once), so both finding and
linking work on arrays; the smaller root always wins, which keeps ids in creation order.
"""

from __future__ import annotations

import numpy as np


class UnionFind:
    def __init__(self) -> None:
        self._parent = np.zeros(0, dtype=np.int64)
        self._n = 0

    def make(self, n: int) -> np.ndarray:
        start = self._n
        if start + n > self._parent.size:
            grown = np.zeros(max(2 * self._parent.size, start + n, 256), dtype=np.int64)
            grown[:start] = self._parent[:start]
            self._parent = grown
        ids = np.arange(start, start + n, dtype=np.int64)
        self._parent[start:start + n] = ids
        self._n = start + n
        return ids

    def find(self, x: np.ndarray) -> np.ndarray:
        """Roots of ``x`` (with path compression for the elements asked about)."""
        p = self._parent
        r = p[x]
        while True:
            rr = p[r]
            if (rr == r).all():  # np.array_equal's checks cost more than the compare here
                break
            r = rr
        p[x] = r
        return r

    def union(self, a: int, b: int) -> None:
        self.union_arrays(np.array([a], dtype=np.int64), np.array([b], dtype=np.int64))

    def union_arrays(self, a: np.ndarray, b: np.ndarray) -> None:
        """Couple a[i] with b[i] for every i."""
        if a is b:
            return
        while True:
            ra, rb = self.find(a), self.find(b)
            diff = ra != rb
            if not diff.any():
                return
            lo = np.minimum(ra[diff], rb[diff])
            hi = np.maximum(ra[diff], rb[diff])
            np.minimum.at(self._parent, hi, lo)

    def roots(self) -> np.ndarray:
        """Root of every element (vectorised pointer jumping)."""
        p = self._parent[: self._n].copy()
        while True:
            q = p[p]
            if (q == p).all():
                return p
            p = q
