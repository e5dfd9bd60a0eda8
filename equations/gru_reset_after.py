"""The GRU with the reset gate applied after the recurrent product: cuDNN's, PyTorch's, Keras's."""

from codegen.activations import sigmoid, tanh
from codegen.cell import Cell

cell = Cell(
    "gru_reset_after",
    description="GRU, reset after the recurrent product (cuDNN, torch.nn.GRU, Keras default)",
    reference="PyTorch torch.nn.GRU documentation; ONNX GRU with linear_before_reset=1",
)
x = cell.input("x")
(h_prev,) = cell.states("h")
W_r, W_z, W_n = cell.matrices("W_r W_z W_n")
U_r, U_z, U_n = cell.matrices("U_r U_z U_n")
b_r, b_z, b_in, b_hn = cell.vectors("b_r b_z b_in b_hn")

r = cell.eq("r", sigmoid(W_r @ x + U_r @ h_prev + b_r), "reset gate")
z = cell.eq("z", sigmoid(W_z @ x + U_z @ h_prev + b_z), "update gate")
n = cell.eq("n", tanh(W_n @ x + b_in + r * (U_n @ h_prev + b_hn)), "candidate")
h = cell.update("h", (1 - z) * n + z * h_prev, "hidden state")
