"""cellgen: recurrent-cell kernels (NumPy and C) generated from SymPy equations.

The public API is `codegen.load` (one cell's kernels), `codegen.RNN` (stacked layers, one or
two directions) and `codegen.export` (a trained model as a C module); the pipeline behind them runs
equations -> cell -> derivation -> kernel description -> backend printer + template -> files.
"""

from .deploy import export
from .errors import CellgenError, EquationError, UnknownCellError
from .info import CellInfo, cell_info
from .load import CellKernel, load
from .rnn import RNN

__all__ = [
    "RNN",
    "CellInfo",
    "CellKernel",
    "CellgenError",
    "EquationError",
    "UnknownCellError",
    "cell_info",
    "export",
    "load",
]
__version__ = "0.1.0"
