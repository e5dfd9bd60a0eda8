"""The minimal gated unit: one forget gate that also resets the candidate (Zhou et al. 2016)."""

from codegen.activations import sigmoid, tanh
from codegen.cell import Cell

cell = Cell(
    "mgu",
    description="Minimal gated unit, one gate (Zhou et al. 2016)",
    reference="G.-B. Zhou et al., Minimal Gated Unit for Recurrent Neural Networks, 2016",
)
x = cell.input("x")
(h_prev,) = cell.states("h")
W_f, W_h = cell.matrices("W_f W_h")
U_f, U_h = cell.matrices("U_f U_h")
b_f, b_h = cell.vectors("b_f b_h")

f = cell.eq("f", sigmoid(W_f @ x + U_f @ h_prev + b_f), "forget gate")
h_hat = cell.eq("h_hat", tanh(W_h @ x + U_h @ (f * h_prev) + b_h), "candidate")
h = cell.update("h", (1 - f) * h_prev + f * h_hat, "hidden state")
