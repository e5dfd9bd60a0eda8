"""Layer-normalised LSTM (Ba et al. 2016, supplement eqs. 20-22), as haste's LayerNormLSTM.

The four gates' input products are normalised together, over their 4 H stacked units, and so
are the recurrent products: pre-activation = LN(U h_prev; gamma_h) + LN(W x; gamma_x) + b, where
LN(v; gamma) = gamma * (v - mean(v)) / sqrt(var(v) + eps) with eps = 1e-5, and no offset. The
cell state is normalised over its H units, with a scale and an offset, before the output's tanh.
Parameters: lstm's W_*, U_*, b_* (gates f, i, c, o); the gain of each gate's normalised input
products gamma_x_* and recurrent products gamma_h_* (haste's gamma[0] and gamma[1], split by
gate); gamma_c and beta_c for the cell state (haste's gamma_h and beta_h).
"""

from codegen.activations import sigmoid, sqrt, tanh
from codegen.cell import Cell
from codegen.reductions import mean

cell = Cell(
    "ln_lstm",
    description="Layer-normalised LSTM (Ba, Kiros & Hinton 2016), as haste's LayerNormLSTM",
    reference="J. L. Ba, J. R. Kiros, G. E. Hinton, Layer Normalization, arXiv:1607.06450",
)
x = cell.input("x")
h_prev, c_prev = cell.states("h", "c")
W_f, W_i, W_c, W_o = cell.matrices("W_f W_i W_c W_o")
U_f, U_i, U_c, U_o = cell.matrices("U_f U_i U_c U_o")
b_f, b_i, b_c, b_o = cell.vectors("b_f b_i b_c b_o")
gx_f, gx_i, gx_c, gx_o = cell.vectors("gamma_x_f gamma_x_i gamma_x_c gamma_x_o")
gh_f, gh_i, gh_c, gh_o = cell.vectors("gamma_h_f gamma_h_i gamma_h_c gamma_h_o")
gamma_c, beta_c = cell.vectors("gamma_c beta_c")
eps = 1e-5

# the input products, normalised over their 4 H stacked units
a = W_f @ x, W_i @ x, W_c @ x, W_o @ x
mu_x = cell.eq("mu_x", mean(*a), "mean of the input products")
v_x = cell.eq("v_x", mean(*[(v - mu_x) ** 2 for v in a]), "their variance")
s_x = cell.eq("s_x", sqrt(v_x + eps), "their standard deviation")
# the recurrent products, likewise
r = U_f @ h_prev, U_i @ h_prev, U_c @ h_prev, U_o @ h_prev
mu_h = cell.eq("mu_h", mean(*r), "mean of the recurrent products")
v_h = cell.eq("v_h", mean(*[(v - mu_h) ** 2 for v in r]), "their variance")
s_h = cell.eq("s_h", sqrt(v_h + eps), "their standard deviation")


def gate(k: int, gain_x, gain_h, bias):
    """A gate's pre-activation: its rows of both normalised products, plus its bias."""
    return gain_h * (r[k] - mu_h) / s_h + gain_x * (a[k] - mu_x) / s_x + bias


f = cell.eq("f", sigmoid(gate(0, gx_f, gh_f, b_f)), "forget gate")
i = cell.eq("i", sigmoid(gate(1, gx_i, gh_i, b_i)), "input gate")
c_tilde = cell.eq("c_tilde", tanh(gate(2, gx_c, gh_c, b_c)), "candidate")
o = cell.eq("o", sigmoid(gate(3, gx_o, gh_o, b_o)), "output gate")
c = cell.update("c", f * c_prev + i * c_tilde, "cell state")
# the cell state, normalised over its H units
mu_c = cell.eq("mu_c", mean(c), "mean of the cell state")
v_c = cell.eq("v_c", mean((c - mu_c) ** 2), "its variance")
s_c = cell.eq("s_c", sqrt(v_c + eps), "its standard deviation")
h = cell.update("h", o * tanh(gamma_c * (c - mu_c) / s_c + beta_c), "hidden state")
