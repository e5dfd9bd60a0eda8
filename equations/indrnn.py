"""The independently recurrent neural network: each unit recurs only on itself (Li et al. 2018)."""

from codegen.activations import relu
from codegen.cell import Cell

cell = Cell(
    "indrnn",
    description="IndRNN, each unit with its own recurrent weight (Li et al. 2018)",
    reference="S. Li et al., Independently Recurrent Neural Network (IndRNN): Building a "
    "Longer and Deeper RNN, CVPR 2018",
)
x = cell.input("x")
(h_prev,) = cell.states("h")
(W,) = cell.matrices("W")
u, b = cell.vectors("u b")

h = cell.update("h", relu(W @ x + u * h_prev + b), "hidden state")
