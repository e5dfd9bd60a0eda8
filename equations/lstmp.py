"""LSTM with a recurrent projection layer (LSTMP), as torch.nn.LSTM(proj_size=P) computes it."""

from codegen.activations import sigmoid, tanh
from codegen.cell import Cell

cell = Cell(
    "lstmp",
    description="LSTM with a projection of the hidden state to size P (Sak et al. 2014)",
    reference="H. Sak, A. Senior, F. Beaufays, Long Short-Term Memory Recurrent Neural "
    "Network Architectures for Large Scale Acoustic Modeling, Interspeech 2014",
)
(P,) = cell.sizes("P")
x = cell.input("x")
h_prev, c_prev = cell.states("h", "c", sizes=("P", "H"))
W_f, W_i, W_c, W_o = cell.matrices("W_f W_i W_c W_o")
U_f, U_i, U_c, U_o = cell.matrices("U_f U_i U_c U_o", shape=("H", "P"))
b_f, b_i, b_c, b_o = cell.vectors("b_f b_i b_c b_o")
(W_p,) = cell.matrices("W_p", shape=("P", "H"))

f = cell.eq("f", sigmoid(W_f @ x + U_f @ h_prev + b_f), "forget gate")
i = cell.eq("i", sigmoid(W_i @ x + U_i @ h_prev + b_i), "input gate")
c_tilde = cell.eq("c_tilde", tanh(W_c @ x + U_c @ h_prev + b_c), "candidate")
c = cell.update("c", f * c_prev + i * c_tilde, "cell state")
o = cell.eq("o", sigmoid(W_o @ x + U_o @ h_prev + b_o), "output gate")
m = cell.eq("m", o * tanh(c), "hidden state before the projection")
h = cell.update("h", W_p @ m, "projected hidden state")
