"""Gradient verification: the backward kernels against derivatives of the forward.

The loss is L = <dys, ys> + sum over states of <dfinal[s], final[s]> with random dys and
dfinal, so backward(dys, dfinal) must return dL/d(every input). Each tensor (xs, every initial
state, every parameter) gets one Row: its worst error relative to the tensor's largest
gradient entry, the method's own noise estimate, and a verdict PASS, FAIL or INCONCLUSIVE; on
FAIL, the worst entry mapped back to its gate, row, column or time step.

Methods (`method=`):
  complex     the complex step, Im L(x + i h e_k) / h with h = 1e-20, entry by entry: exact to
              rounding (~1e-16); needs a complex-capable forward (a backend with complex_step,
              as NumPy), so the others fall back to Richardson. The default where it can run.
  richardson  central differences at h, h/2, h/4, h/8 extrapolated twice (error ~1e-12),
              entry by entry; the default without complex arithmetic (C), and the fallback.
  central     plain central differences (error ~1e-10), entry by entry, for comparison.
  dot         the dot-product test: <w, J v> from a forward-mode derivative (complex step, or
              Richardson for C) against <v, backward(w)>, for random v per tensor.
  taylor      the first-order Taylor remainder |L(x + e v) - L(x) - e <g, v>| must shrink
              like e^2 (rate 2); a wrong gradient leaves a first-order term (rate 1).
The entrywise methods run at tiny sizes (H = 3) where every entry is checked, and add seeded
random projections at a larger size (I != H, odd sizes). A direction-only method that fails
(dot, taylor, or a projection) is followed by an entrywise check at its size to find the entry.

float32 kernels are compared with the float64 derivative of the same backend's float64 forward
at the same (float32-rounded) point, with a float32 tolerance: never with float32 differences.

The parts: problems.py (test points, also used by bench), references.py (derivatives of the
loss along a line, kinks), judge.py (tolerances, verdicts, the worst entry in words),
checks.py (entrywise, directional and Taylor checks of one tensor), report.py (Row, table,
JSON), run.py (verify, verify_kernel). The names below are the public API; the rest is
reached through the parts.
"""

from .checks import check_directions
from .judge import FLOAT32_TOLERANCE, TAYLOR_RATE_TOLERANCE, TOLERANCES, gates_of, judge, locate
from .problems import (
    ENTRY_SIZES,
    PROJECTION_SIZES,
    PROJECTIONS,
    Problem,
    analytic_gradients,
    directions,
    entry_problem,
    projection_problem,
    random_problem,
)
from .references import Loss
from .report import Row
from .run import METHODS, default_method, verify, verify_kernel

__all__ = [
    "ENTRY_SIZES",
    "FLOAT32_TOLERANCE",
    "METHODS",
    "PROJECTIONS",
    "PROJECTION_SIZES",
    "TAYLOR_RATE_TOLERANCE",
    "TOLERANCES",
    "Loss",
    "Problem",
    "Row",
    "analytic_gradients",
    "check_directions",
    "default_method",
    "directions",
    "entry_problem",
    "gates_of",
    "judge",
    "locate",
    "projection_problem",
    "random_problem",
    "verify",
    "verify_kernel",
]
