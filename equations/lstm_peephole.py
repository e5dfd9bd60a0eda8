"""The peephole LSTM of ONNX: the gates also see the cell state, c_{t-1} or the new c_t."""

from codegen.activations import sigmoid, tanh
from codegen.cell import Cell

cell = Cell(
    "lstm_peephole",
    description="LSTM with peephole connections (Gers & Schmidhuber 2000; ONNX LSTM with P)",
    reference="F. Gers, J. Schmidhuber, Recurrent Nets that Time and Count, IJCNN 2000",
)
x = cell.input("x")
h_prev, c_prev = cell.states("h", "c")
W_f, W_i, W_c, W_o = cell.matrices("W_f W_i W_c W_o")
U_f, U_i, U_c, U_o = cell.matrices("U_f U_i U_c U_o")
b_f, b_i, b_c, b_o = cell.vectors("b_f b_i b_c b_o")
p_i, p_f, p_o = cell.vectors("p_i p_f p_o")

f = cell.eq("f", sigmoid(W_f @ x + U_f @ h_prev + b_f + p_f * c_prev), "forget gate")
i = cell.eq("i", sigmoid(W_i @ x + U_i @ h_prev + b_i + p_i * c_prev), "input gate")
c_tilde = cell.eq("c_tilde", tanh(W_c @ x + U_c @ h_prev + b_c), "candidate")
c = cell.update("c", f * c_prev + i * c_tilde, "cell state")
o = cell.eq("o", sigmoid(W_o @ x + U_o @ h_prev + b_o + p_o * c), "output gate, sees the new c_t")
h = cell.update("h", o * tanh(c), "hidden state")
