"""The classic LSTM: forget, input and output gates, a candidate, cell state and hidden state."""

from codegen.activations import sigmoid, tanh
from codegen.cell import Cell

cell = Cell(
    "lstm",
    description="LSTM with forget gate (Hochreiter & Schmidhuber 1997; Gers et al. 2000)",
    reference="S. Hochreiter, J. Schmidhuber, Long Short-Term Memory, Neural Computation 1997",
)
x = cell.input("x")
h_prev, c_prev = cell.states("h", "c")
W_f, W_i, W_c, W_o = cell.matrices("W_f W_i W_c W_o")
U_f, U_i, U_c, U_o = cell.matrices("U_f U_i U_c U_o")
b_f, b_i, b_c, b_o = cell.vectors("b_f b_i b_c b_o")

f = cell.eq("f", sigmoid(W_f @ x + U_f @ h_prev + b_f), "forget gate")
i = cell.eq("i", sigmoid(W_i @ x + U_i @ h_prev + b_i), "input gate")
c_tilde = cell.eq("c_tilde", tanh(W_c @ x + U_c @ h_prev + b_c), "candidate")
c = cell.update("c", f * c_prev + i * c_tilde, "cell state")
o = cell.eq("o", sigmoid(W_o @ x + U_o @ h_prev + b_o), "output gate")
h = cell.update("h", o * tanh(c), "hidden state")
