"""The simple recurrent unit with its highway connection (Lei et al. 2018): output h, state c."""

from codegen.activations import sigmoid
from codegen.cell import Cell

cell = Cell(
    "sru",
    description="Simple recurrent unit with the highway connection (Lei et al. 2018)",
    reference="T. Lei et al., Simple Recurrent Units for Highly Parallelizable Recurrence, "
    "EMNLP 2018",
    output="h",
)
x = cell.input("x", size="H")  # the highway adds x to h elementwise: I = H
(c_prev,) = cell.states("c")
W, W_f, W_r = cell.matrices("W W_f W_r")
v_f, v_r, b_f, b_r = cell.vectors("v_f v_r b_f b_r")

f = cell.eq("f", sigmoid(W_f @ x + v_f * c_prev + b_f), "forget gate")
c = cell.update("c", f * c_prev + (1 - f) * (W @ x), "internal state")
r = cell.eq("r", sigmoid(W_r @ x + v_r * c_prev + b_r), "reset gate")
h = cell.eq("h", r * c + (1 - r) * x, "output, with the highway")
