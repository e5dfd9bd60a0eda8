"""MUT3, a gated cell found by architecture search (Jozefowicz, Zaremba & Sutskever 2015)."""

from codegen.activations import sigmoid, tanh
from codegen.cell import Cell

cell = Cell(
    "mut3",
    description="MUT3, a GRU-like cell found by architecture search",
    reference="R. Jozefowicz et al., An Empirical Exploration of Recurrent Network Architectures",
)
x = cell.input("x")
(h_prev,) = cell.states("h")
W_z, W_r, W_h = cell.matrices("W_z W_r W_h")
U_z, U_r, U_h = cell.matrices("U_z U_r U_h")
b_z, b_r, b_h = cell.vectors("b_z b_r b_h")

z = cell.eq("z", sigmoid(W_z @ x + U_z @ tanh(h_prev) + b_z), "update gate")
r = cell.eq("r", sigmoid(W_r @ x + U_r @ h_prev + b_r), "reset gate")
h_hat = cell.eq("h_hat", tanh(W_h @ x + U_h @ (r * h_prev) + b_h), "candidate")
h = cell.update("h", z * h_hat + (1 - z) * h_prev, "hidden state")
