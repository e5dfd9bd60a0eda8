"""The LSTM with coupled input and forget gates (CIFG): f_t = 1 - i_t, no forget weights."""

from codegen.activations import sigmoid, tanh
from codegen.cell import Cell

cell = Cell(
    "lstm_cifg",
    description="LSTM with coupled input and forget gate, f = 1 - i (ONNX input_forget=1)",
    reference="K. Greff et al., LSTM: A Search Space Odyssey, IEEE TNNLS 2017",
)
x = cell.input("x")
h_prev, c_prev = cell.states("h", "c")
W_i, W_c, W_o = cell.matrices("W_i W_c W_o")
U_i, U_c, U_o = cell.matrices("U_i U_c U_o")
b_i, b_c, b_o = cell.vectors("b_i b_c b_o")

i = cell.eq("i", sigmoid(W_i @ x + U_i @ h_prev + b_i), "input gate")
c_tilde = cell.eq("c_tilde", tanh(W_c @ x + U_c @ h_prev + b_c), "candidate")
c = cell.update("c", (1 - i) * c_prev + i * c_tilde, "cell state, forget gate 1 - i")
o = cell.eq("o", sigmoid(W_o @ x + U_o @ h_prev + b_o), "output gate")
h = cell.update("h", o * tanh(c), "hidden state")
