"""A cache owns what backward reads (issue 15 item 6): changing the returned ys, or an input,
between forward and backward changes no gradient."""

from __future__ import annotations

import numpy as np
import pytest

import codegen

from conftest import BACKENDS, make_problem


def _mutate(what: str, ys, xs, state0, params) -> None:
    {"ys": ys, "xs": xs, "state0": state0["c"], "params": params["U_f"]}[what][...] = 0.5


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("what", ["ys", "xs", "state0", "params"])
def test_changing_ys_or_an_input_before_backward_changes_no_gradient(backend, what):
    k = codegen.load("lstm", backend)
    xs, state0, params, dys, dfinal = make_problem(k)
    ys, _, cache = k.forward(xs, state0, params)
    expected = k.backward(dys, cache, dfinal)
    ys_before = ys.copy()
    _mutate(what, ys, xs, state0, params)
    dxs, dstate0, dparams = k.backward(dys, cache, dfinal)
    np.testing.assert_array_equal(dxs, expected[0])
    for s in k.states:
        np.testing.assert_array_equal(dstate0[s], expected[1][s])
    for p in k.params:
        np.testing.assert_array_equal(dparams[p], expected[2][p], err_msg=p)
    if what != "ys":  # and the ys returned are the caller's, equal to the forward's
        np.testing.assert_array_equal(ys, ys_before)


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_returned_ys_are_the_callers_to_change(backend):
    k = codegen.load("gru", backend)
    xs, state0, params, _, _ = make_problem(k)
    ys, _, cache = k.forward(xs, state0, params)
    assert ys.flags.writeable and not np.shares_memory(ys, cache["ys"])
    mine = [xs, *state0.values(), *params.values()]
    kept = [cache["xs"], *cache["state0"].values(), *cache["params"].values()]
    assert not any(np.shares_memory(a, b) for a in mine for b in kept)
