"""The SDPA rule over masks with a sliding window (``causal_mask.causal_window``) as Before / Expected
text: a mask proven the step's causal mask restricted to each query's last ``w`` keys becomes
``sliding_window_mask(mask, position_ids) {window = w}``; masks that are not exactly that stay."""

from __future__ import annotations

import numpy as np
import pytest
from zoo import ONNX_STEP_MASK, onnx_sdpa

from llmc.compiler.passes.fuse import fuse_module
from llmc.generate.interpreter import causal_mask
from llmc.ir import Module, parse_module, print_module, run_function, verify_module

INPUTS = ("%q: tensor<1x2xLx4xf32>, %past_k: tensor<1x2xPx4xf32>, %new_k: tensor<1x2xLx4xf32>, "
          "%past_v: tensor<1x2xPx4xf32>, %new_v: tensor<1x2xLx4xf32>, %mask: tensor<1x1xLxL+Pxf32>, "
          "%position_ids: tensor<1xLxi64>")
CACHE = """\
    %k = concat(%past_k, %new_k) {axis = 2} : tensor<1x2xL+Px4xf32>
    %v = concat(%past_v, %new_v) {axis = 2} : tensor<1x2xL+Px4xf32>
"""
# torch.onnx's SDPA in a step program over transformers' mask with a 4-key sliding window:
# keys > queries - 4, keys <= queries, and the attention_mask the import computes from the step's mask
BEFORE = CACHE + ONNX_STEP_MASK + """\
    %window = constant() {value = 4, shape = [], dtype = i64} : tensor<i64>
    %oldest = sub(%queries, %window) : tensor<1x1xLx1xi64>
    %recent = gt(%keys4, %oldest) : tensor<1x1xLxL+Pxbool>
    %causal = le(%keys4, %queries) : tensor<1x1xLxL+Pxbool>
    %both = logical_and(%recent, %causal) : tensor<1x1xLxL+Pxbool>
    %padded = gather(%flat, %keys4) {axis = 0} : tensor<1x1x1xL+Pxbool>
    %keep = logical_and(%both, %padded) : tensor<1x1xLxL+Pxbool>
    %lowest = constant() {value = -3.4028234663852886e+38, shape = [], dtype = f32} : tensor<f32>
    %bias = where(%keep, %zero, %lowest) : tensor<1x1xLxL+Pxf32>
    %kt = transpose(%k) {perm = [0, 1, 3, 2]} : tensor<1x2x4xL+Pxf32>
""" + onnx_sdpa("v")
EXPECTED = CACHE + """\
    %0 = sliding_window_mask(%mask, %position_ids) {window = 4} : tensor<1x1xLxL+Pxf32>
    %y = attention(%q, %k, %v, %0) {scale = 0.49999997} : tensor<1x2xLx4xf32>"""


def step(body: str, inputs: str = INPUTS) -> Module:
    return parse_module(f'module "m" {{}} {{\n  func @step({inputs}) {{\n{body}\n    return %y\n  }}\n}}')


def fused(body: str, inputs: str = INPUTS) -> Module:
    module = step(body, inputs)
    fuse_module(module)
    verify_module(module)
    return module


def window_of(body: str, inputs: str = INPUTS) -> int | None:
    """The fused attention's window (0: none), None if the attention was not fused."""
    ops = {n.op: n.attrs for n in fused(body, inputs).functions["step"].nodes}
    if "attention" not in ops:
        return None
    return ops["sliding_window_mask"]["window"] if "sliding_window_mask" in ops else 0


def run(module: Module) -> np.ndarray:
    """The step on 3 new tokens after 5 cached ones, more than the window."""
    rng = np.random.default_rng(11)
    inputs = {"q": rng.standard_normal((1, 2, 3, 4)).astype(np.float32),
              **{f"{age}_{kv}": rng.standard_normal((1, 2, n, 4)).astype(np.float32)
                 for kv in "kv" for age, n in (("past", 5), ("new", 3))},
              "mask": causal_mask(3, 5), "position_ids": np.arange(5, 8)[None]}
    return run_function(module, "step", inputs)["y"]


def test_a_windowed_causal_mask_is_a_sliding_window_over_the_steps_mask() -> None:
    before = step(BEFORE)
    want = run(before)
    assert print_module(fused(BEFORE)) == print_module(step(EXPECTED))
    np.testing.assert_allclose(run(step(EXPECTED)), want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(("recent", "window"), [
    ("gt(%keys4, %oldest)", 4),  # keys > q - 4
    ("lt(%oldest, %keys4)", 4),  # the same, mirrored
    ("ge(%keys4, %oldest)", 5),  # keys >= q - 4: one key more
    ("le(%oldest, %keys4)", 5),
])
def test_the_window_is_the_one_the_mask_keeps(recent: str, window: int) -> None:
    body = BEFORE.replace("gt(%keys4, %oldest)", recent)
    assert window_of(body) == window
    np.testing.assert_allclose(run(fused(body)), run(step(body)), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("near_miss", [
    ("gt(%keys4, %oldest)", "lt(%keys4, %oldest)"),  # the window on the wrong side: only the old keys
    ("gt(%keys4, %oldest)", "gt(%oldest, %keys4)"),
    ("{value = 4, shape = [], dtype = i64}", "{value = 0, shape = [], dtype = i64}"),  # a window of no key
    ("{value = 4, shape = [], dtype = i64}", "{value = -1, shape = [], dtype = i64}"),  # keys after the query
    ("sub(%queries, %window)", "sub(%window, %queries)"),  # a window counted backwards
    ("le(%keys4, %queries)", "lt(%keys4, %queries)"),  # the diagonal masked
    ("%oldest = sub(%queries, %window) : tensor<1x1xLx1xi64>",  # the window from the queries' indices
     "%steps4 = reshape(%steps) {shape = [1, 1, L, 1]} : tensor<1x1xLx1xi64>\n"
     "    %oldest = sub(%steps4, %window) : tensor<1x1xLx1xi64>"),
])
def test_masks_that_are_not_a_window_of_the_causal_mask_are_left_alone(near_miss: tuple[str, str]) -> None:
    assert window_of(BEFORE) == 4
    assert window_of(BEFORE.replace(*near_miss)) is None


def test_the_padding_gather_may_be_reshaped() -> None:
    """The TorchScript exporter gathers ``attention_mask`` flattened to [S, 1] and reshapes the result."""
    padded = ("%column = reshape(%attended) {shape = [L+P, 1]} : tensor<L+Px1xbool>\n"
              "    %picked = gather(%column, %keys4) {axis = 0} : tensor<1x1x1xL+Px1xbool>\n"
              "    %padded = reshape(%picked) {shape = [1, 1, 1, L+P]} : tensor<1x1x1xL+Pxbool>")
    assert window_of(BEFORE.replace("%padded = gather(%flat, %keys4) {axis = 0} : tensor<1x1x1xL+Pxbool>", padded)) == 4
    assert window_of(BEFORE.replace("%padded = gather(%flat, %keys4) {axis = 0} : tensor<1x1x1xL+Pxbool>",
                                    padded.replace("reshape(%attended)", "reshape(%other)")),
                     INPUTS + ", %other: tensor<1xL+Pxbool>") is None  # padding from another mask


def test_a_window_needs_the_steps_positions() -> None:
    assert window_of(BEFORE.replace("%window = constant() {value = 4, shape = [], dtype = i64} : tensor<i64>\n", ""),
                     INPUTS + ", %window: tensor<i64>") is None  # a window not known at compile time
    assert window_of(BEFORE, INPUTS.replace(", %position_ids: tensor<1xLxi64>", "")) is None
