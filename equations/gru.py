"""The GRU with the reset gate applied before the recurrent product (Cho et al. 2014)."""

from codegen.activations import sigmoid, tanh
from codegen.cell import Cell

cell = Cell(
    "gru",
    description="GRU, reset before the recurrent product (Cho et al. 2014; Chung et al. 2014)",
    reference="K. Cho et al., Learning Phrase Representations using RNN Encoder-Decoder, 2014",
)
x = cell.input("x")
(h_prev,) = cell.states("h")
W_z, W_r, W_h = cell.matrices("W_z W_r W_h")
U_z, U_r, U_h = cell.matrices("U_z U_r U_h")
b_z, b_r, b_h = cell.vectors("b_z b_r b_h")

z = cell.eq("z", sigmoid(W_z @ x + U_z @ h_prev + b_z), "update gate")
r = cell.eq("r", sigmoid(W_r @ x + U_r @ h_prev + b_r), "reset gate")
h_hat = cell.eq("h_hat", tanh(W_h @ x + U_h @ (r * h_prev) + b_h), "candidate")
h = cell.update("h", (1 - z) * h_prev + z * h_hat, "hidden state")
