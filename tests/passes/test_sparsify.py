"""Pruning masks (magnitude, Wanda, SparseGPT) and the ``sparsify`` pass.

:func:`tiny_lm` (also used by test_outliers.py) is a small attention-free language model with
``prefill`` and ``decode`` functions, a biased MLP and a head tied to the embedding.
"""

from __future__ import annotations

import numpy as np
import pytest

import llmc.compiler.passes  # noqa: F401  (registers the passes)
from llmc.compiler.passes.linear import linear_layers
from llmc.compiler.pipeline import PassContext, PipelineError, parse_pipeline, run_pipeline
from llmc.compiler.quant.sparse import SUPPORTED_NM, Pattern, magnitude_mask, sparsegpt, wanda_mask
from llmc.ir import F32, I64, Builder, Function, Module, Param, TensorType, parse_module, print_module, run_function
from llmc.ir.types import Dim, SparseEncoding
from llmc.ir.verify import verify_module

D, F, V = 16, 32, 24


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def tiny_lm(seed: int = 0) -> Module:
    """Two blocks ``h += linear(h, q_proj)``, ``h += down(silu(up(h) + b))``; tied head."""
    rng = np.random.default_rng(seed)
    module = Module("tiny", {"vocab_size": V})
    shapes = {"model.embed_tokens.weight": [V, D]}
    for i in range(2):
        shapes |= {f"model.layers.{i}.self_attn.q_proj.weight": [D, D], f"model.layers.{i}.mlp.up_proj.weight": [F, D],
                   f"model.layers.{i}.mlp.up_proj.bias": [F], f"model.layers.{i}.mlp.down_proj.weight": [D, F]}
    for name, shape in shapes.items():
        module.params[name] = Param(name, TensorType.of(shape, F32), (rng.standard_normal(shape) * 0.5).astype(np.float32))
    for func_name, length in (("prefill", Dim.sym("L")), ("decode", Dim.of(1))):
        func = Function(func_name)
        module.functions[func_name] = func
        b = Builder(module, func)
        ids = b.input("input_ids", TensorType.of([1, length], I64))
        b.input("mask", TensorType.of([1, 1, length, length], F32))
        b.input("position_ids", TensorType.of([1, length], I64))
        h = b.op("embedding", [b.param("model.embed_tokens.weight"), ids])
        for i in range(2):
            p = f"model.layers.{i}."
            h = b.op("add", [h, b.op("linear", [h, b.param(p + "self_attn.q_proj.weight")])])
            up = b.op("linear", [h, b.param(p + "mlp.up_proj.weight"), b.param(p + "mlp.up_proj.bias")])
            h = b.op("add", [h, b.op("linear", [b.op("silu", [up]), b.param(p + "mlp.down_proj.weight")])])
        b.ret(b.op("linear", [h, b.param("model.embed_tokens.weight")], name="logits"))
    verify_module(module)
    return module


def run_both(module: Module) -> tuple[np.ndarray, np.ndarray]:
    """Logits of prefill on 6 tokens and of decode on one."""
    ids = np.array([[1, 5, 7, 2, 9, 11]], dtype=np.int64)
    inputs = {"input_ids": ids, "mask": np.zeros((1, 1, 6, 6), np.float32), "position_ids": np.arange(6)[None]}
    one = {"input_ids": ids[:, :1], "mask": np.zeros((1, 1, 1, 1), np.float32), "position_ids": np.zeros((1, 1), np.int64)}
    return run_function(module, "prefill", inputs)["logits"], run_function(module, "decode", one)["logits"]


# -- reference implementations ------------------------------------------------------------------
def plain_nm(score: np.ndarray, n: int, m: int) -> np.ndarray:
    keep = np.zeros(score.shape, dtype=bool)
    for r in range(score.shape[0]):
        for g in range(0, score.shape[1], m):
            best = sorted(range(g, g + m), key=lambda j: -score[r, j])[:n]
            keep[r, best] = True
    return keep


def plain_threshold(score: np.ndarray, ratio: float) -> np.ndarray:
    """Keep what is above the ``round(ratio * size)``-th smallest score (no ties in tests)."""
    cut = np.sort(score.ravel())[int(round(ratio * score.size)) - 1]
    return score > cut


def textbook_sparsegpt(w: np.ndarray, h: np.ndarray, pattern: Pattern, block: int, damp: float = 0.01) -> np.ndarray:
    """Column-by-column OBS with explicit inverses of the Hessian of the columns not yet pruned."""
    w = w.astype(np.float64).copy()
    k = w.shape[1]
    h = h + damp * np.mean(np.diag(h)) * np.eye(k)
    inv_rows = [np.linalg.inv(h[j:, j:])[0] for j in range(k)]  # row j of (H_{j..k-1})^-1
    keep = np.ones(w.shape, dtype=bool)
    for j in range(k):
        span = pattern.m if pattern.structured else block
        if j % span == 0:
            cols = range(j, min(j + span, k))
            score = np.stack([w[:, c] ** 2 / inv_rows[c][0] for c in cols], axis=1)
            if pattern.structured:
                keep[:, j:j + span] = plain_nm(score, pattern.n, pattern.m)
            else:
                keep[:, j:j + span] = plain_threshold(score, pattern.ratio)
        q = np.where(keep[:, j], w[:, j], 0.0)
        w[:, j:] -= np.outer((w[:, j] - q) / inv_rows[j][0], inv_rows[j])
        w[:, j] = q
    return w


def correlated_inputs(rng: np.random.Generator, rows: int, k: int, rho: float = 0.8) -> np.ndarray:
    common = rng.standard_normal((rows, 1))
    return np.sqrt(rho) * common + np.sqrt(1 - rho) * rng.standard_normal((rows, k))


def output_error(x: np.ndarray, w: np.ndarray, pruned: np.ndarray) -> float:
    return float(np.sum((x @ (w - pruned).T) ** 2))


# -- masks ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("n,m", SUPPORTED_NM)
def test_nm_patterns_hold_exactly(rng, n, m):
    w = rng.standard_normal((8, 64)).astype(np.float32)
    x = correlated_inputs(rng, 256, 64)
    pattern = Pattern(n, m)
    for pruned in (np.where(magnitude_mask(w, pattern), w, 0), np.where(wanda_mask(w, (x**2).sum(0), pattern), w, 0),
                   sparsegpt(w, 2 * x.T @ x / len(x), pattern)):
        assert (np.count_nonzero(pruned.reshape(8, 64 // m, m), axis=-1) == n).all()


@pytest.mark.parametrize("ratio", [0.3, 0.5, 0.75])
def test_unstructured_counts_are_exact(rng, ratio):
    w = rng.standard_normal((8, 256)).astype(np.float32)
    x = rng.standard_normal((512, 256))
    pattern = Pattern(ratio=ratio)
    assert (~magnitude_mask(w, pattern)).sum() == round(ratio * w.size)  # over the whole layer
    assert ((~wanda_mask(w, (x**2).sum(0), pattern)).sum(axis=1) == round(ratio * 256)).all()  # per row
    pruned = sparsegpt(w, 2 * x.T @ x / len(x), pattern, block=128)  # per block of 128 columns
    for b in range(2):
        assert (pruned[:, 128 * b:128 * (b + 1)] == 0).sum() == round(ratio * 8 * 128)


def test_magnitude_and_wanda_match_plain_numpy(rng):
    w = rng.standard_normal((6, 32))
    sq = rng.uniform(0.1, 10, 32)
    score = np.abs(w) * np.sqrt(sq)
    for n, m in SUPPORTED_NM:
        assert (magnitude_mask(w, Pattern(n, m)) == plain_nm(np.abs(w), n, m)).all()
        assert (wanda_mask(w, sq, Pattern(n, m)) == plain_nm(score, n, m)).all()
    assert (magnitude_mask(w, Pattern(ratio=0.6)) == plain_threshold(np.abs(w), 0.6)).all()
    wanda = wanda_mask(w, sq, Pattern(ratio=0.6))
    for r in range(6):
        assert (wanda[r] == plain_threshold(score[r:r + 1], 0.6)[0]).all()


@pytest.mark.parametrize("pattern", [Pattern(2, 4), Pattern(4, 16), Pattern(ratio=0.5)], ids=str)
def test_sparsegpt_matches_textbook_obs(rng, pattern):
    w = rng.standard_normal((8, 48))
    x = correlated_inputs(rng, 200, 48)
    h = 2 * x.T @ x / len(x)
    got = sparsegpt(w, h, pattern, block=16)
    want = textbook_sparsegpt(w, h, pattern, block=16)
    assert ((got == 0) == (want == 0)).all()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def errors_by_method(x: np.ndarray, w: np.ndarray, pattern: Pattern) -> dict[str, float]:
    return {
        "magnitude": output_error(x, w, np.where(magnitude_mask(w, pattern), w, 0)),
        "wanda": output_error(x, w, np.where(wanda_mask(w, (x**2).sum(0), pattern), w, 0)),
        "sparsegpt": output_error(x, w, sparsegpt(w, 2 * x.T @ x / len(x), pattern)),
    }


@pytest.mark.parametrize("pattern", [Pattern(2, 4), Pattern(ratio=0.5)], ids=str)
def test_sparsegpt_has_the_lowest_error_on_correlated_inputs(rng, pattern):
    x, w = correlated_inputs(rng, 512, 64), rng.standard_normal((32, 64))
    errors = errors_by_method(x, w, pattern)
    assert errors["sparsegpt"] < 0.5 * min(errors["wanda"], errors["magnitude"]), errors


@pytest.mark.parametrize("pattern", [Pattern(2, 4), Pattern(ratio=0.5)], ids=str)
def test_wanda_beats_magnitude_on_uneven_feature_norms(rng, pattern):
    x = rng.standard_normal((512, 64)) * np.exp(rng.uniform(-1.5, 1.5, 64))
    w = rng.standard_normal((32, 64))
    errors = errors_by_method(x, w, pattern)
    assert errors["wanda"] < 0.5 * errors["magnitude"], errors


def test_sparsegpt_prunes_dead_inputs_first(rng):
    x = rng.standard_normal((128, 8))
    x[:, 1] = 0.0
    w = rng.standard_normal((4, 8)) + 5.0
    pruned = sparsegpt(w, 2 * x.T @ x / len(x), Pattern(2, 4))
    assert (pruned[:, 1] == 0).all()


def test_pattern_parse():
    assert Pattern.parse("4:8") == Pattern(4, 8)
    assert Pattern.parse("unstructured", 0.7) == Pattern(ratio=0.7)
    assert Pattern.parse("0.25") == Pattern(ratio=0.25) and Pattern(ratio=0.25).sparsity == 0.25
    assert Pattern(2, 16).sparsity == 0.875
    for bad in ("3:4", "2:8", "5:4", "2:32", "1.5", "x", "a:b"):
        with pytest.raises(ValueError):
            Pattern.parse(bad)


# -- the pass -------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec", ["sparsify", "sparsify{method=wanda,pattern=4:8}", "sparsify{method=sparsegpt,pattern=8:16}",
                                  "sparsify{method=sparsegpt,pattern=unstructured,ratio=0.6}"])
def test_pass_verifies_round_trips_and_runs(spec):
    module = tiny_lm()
    call = parse_pipeline(spec)[0]
    context = PassContext()
    out = run_pipeline(module, [call], context)
    verify_module(out)
    assert parse_module(print_module(out)) == out
    pattern = call.options.default
    layers = linear_layers(module)
    assert len(layers) == 6 and linear_layers(out) == layers  # sparse float weights stay quantization candidates
    for layer in layers:
        p = out.params[layer.weight]
        (encoding,) = p.type.encodings
        if pattern.structured:
            assert encoding == SparseEncoding(pattern.n, pattern.m)
            groups = p.data.reshape(layer.out_features, -1, pattern.m)
            assert (np.count_nonzero(groups, axis=-1) <= pattern.n).all()
        else:
            assert encoding.density == np.count_nonzero(p.data) / p.data.size
            assert abs(encoding.density - 0.4) < 0.01
    for name in ("model.embed_tokens.weight", "model.layers.0.mlp.up_proj.bias"):
        assert out.params[name].type.encodings == () and out.params[name].data is module.params[name].data
    assert context.reports["sparsify"]["layers"] == 6
    assert context.reports["sparsify"]["sparsity"] == pytest.approx(pattern.sparsity, abs=0.01)
    by_hand = tiny_lm()  # the dense program given the pruned weights computes the same, exactly
    for name, p in out.params.items():
        by_hand.params[name].data = p.data
    for got, want in zip(run_both(out), run_both(by_hand)):
        np.testing.assert_array_equal(got, want)


def test_per_layer_ratios():
    spec = "sparsify{pattern=unstructured,ratio=0.5,ratios=mlp=0.75;1=2:4;q_proj=0.25;0-0=0.125}"
    out = run_pipeline(tiny_lm(), parse_pipeline(spec))
    want = {"0.self_attn.q_proj": 0.875, "0.mlp.up_proj": 0.875, "0.mlp.down_proj": 0.875,
            "1.self_attn.q_proj": 0.75, "1.mlp.up_proj": "2:4", "1.mlp.down_proj": "2:4"}
    for key, expected in want.items():
        (encoding,) = out.params[f"model.layers.{key}.weight"].type.encodings
        assert str(encoding) == ("#sparse<2:4>" if expected == "2:4" else f"#sparse<block=1,density={expected}>")


BEFORE = """
module "t" {{vocab_size = 8}} {{
  param "emb" : tensor<8x{d}xf32>
  param "layers.0.w" : tensor<{d}x{d}xf32{enc}>
  func @prefill(%ids: tensor<1xLxi64>) {{
    %emb = param() {{name = "emb"}} : tensor<8x{d}xf32>
    %h = embedding(%emb, %ids) : tensor<1xLx{d}xf32>
    %w = param() {{name = "layers.0.w"}} : tensor<{d}x{d}xf32{enc}>
    %y = linear(%h, %w) : tensor<1xLx{d}xf32>
    %logits = linear(%y, %emb) : tensor<1xLx8xf32>
    return %logits
  }}
}}
"""


def with_data(text: str) -> Module:
    module = parse_module(text)
    rng = np.random.default_rng(0)
    for p in module.params.values():
        p.data = rng.standard_normal(p.type.static_shape()).astype(np.float32)
    return module


def test_ir_before_expected():
    out = run_pipeline(with_data(BEFORE.format(d=8, enc="")), parse_pipeline("sparsify{pattern=2:4}"))
    assert out == parse_module(BEFORE.format(d=8, enc=" #sparse<2:4>"))
    data = with_data(BEFORE.format(d=8, enc="")).params["layers.0.w"].data
    np.testing.assert_array_equal(out.params["layers.0.w"].data, np.where(plain_nm(np.abs(data), 2, 4), data, 0))


@pytest.mark.parametrize("spec,message", [
    ("sparsify{pattern=3:4}", "not supported by the sparse DSP chain"),
    ("sparsify{pattern=2:8}", "not supported"),
    ("sparsify{pattern=6:4}", "N <= M"),
    ("sparsify{pattern=2:32}", "M in 4, 8 or 16"),
    ("sparsify{pattern=unstructured,ratio=1.0}", r"ratio must be in \(0, 1\)"),
    ("sparsify{pattern=unstructured,ratio=0}", r"ratio must be in \(0, 1\)"),
    ("sparsify{pattern=2:4,ratio=0.5}", "ratio applies to pattern=unstructured"),
    ("sparsify{pattern=dense}", "bad sparsity pattern"),
    ("sparsify{method=obs}", "unknown method"),
    ("sparsify{damp=1}", "damp"),
    ("sparsify{ratios=mlp}", "not key=value"),
    ("sparsify{ratios=mlp=3:4}", "not supported"),
    ("sparsify{ratios=lm_head=0.5}", "matches no linear layer"),
    ("sparsify{ratios=7-9=0.5}", "matches no linear layer"),
    ("sparsify{pattern=8:16}", "K divisible by 16"),
])
def test_bad_options_are_refused(spec, message):
    module = with_data(BEFORE.format(d=12, enc=""))
    with pytest.raises(PipelineError, match=message):
        run_pipeline(module, parse_pipeline(spec))
