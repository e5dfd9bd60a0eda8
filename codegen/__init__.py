"""cellgen: recurrent-cell kernels (NumPy and C) generated from SymPy equations.

The public API is `codegen.load` (one cell's kernels) and `codegen.RNN` (stacked layers, one
or two directions); the pipeline behind it runs
equations -> cell -> derivation -> kernel description -> backend printer + template -> files.
"""

from .errors import CellgenError, EquationError, UnknownCellError
from .load import CellKernel, load
from .rnn import RNN

__all__ = ["RNN", "CellKernel", "CellgenError", "EquationError", "UnknownCellError", "load"]
__version__ = "0.1.0"
