"""A generated NumPy module's functions for one kernel, with work arrays that kernel owns.

The module itself is shared (imported once per path); its work arrays live here instead, one
Work per thread, so that they are bounded (`work_limit` bytes per thread) and are freed with the
kernel that uses them.
"""

from __future__ import annotations

import threading
from types import ModuleType


class NumpyFunctions:
    """forward, backward, pack and infer of one generated module, with this kernel's Work."""

    def __init__(self, module: ModuleType) -> None:
        self.module = module
        self.work_limit: int = module.WORK_KEPT  # bytes kept between calls, per thread
        self._local = threading.local()

    def _work(self):
        """This thread's Work (a new one when the limit changed)."""
        work = getattr(self._local, "work", None)
        if work is None or work.limit != self.work_limit:
            work = self._local.work = self.module.Work(self.work_limit)
        return work

    def numbers(self, what: str, T: int, B: int, I: int, H: int, *declared: int) -> int:
        """Numbers a call allocates besides its results, at least: forward keeps a series of
        each saved value and of each state besides the output (ys), each of its own size."""
        module = self.module
        if what != "forward":
            return 0
        sizes = {"1": 1, "I": I, "H": H, **dict(zip(module.SIZES, declared, strict=True))}
        return T * B * sum(sizes[z] for z in module.SERIES_SIZES.values())

    def forward(self, xs, state0: dict, params: dict, lengths=None, reverse=False):
        return self.module.forward(xs, state0, params, lengths, reverse, work=self._work())

    def backward(self, dys, cache: dict, dfinal: dict):
        return self.module.backward(dys, cache, dfinal, work=self._work())

    def pack(self, params: dict, input_size: int, hidden_size: int, sizes=None):
        return self.module.pack(params, input_size, hidden_size)

    def infer(self, xs, state0: dict, packed, lengths=None, reverse=False, sizes=None):
        """`sizes` (declared sizes, when the cell has any) are read from the arrays here."""
        return self.module.infer(xs, state0, packed, lengths, reverse, work=self._work())
