"""What the tests share: small model configs of each family, the engine recipes of the bundled model,
prompts, :func:`shared_folder` (made once per run, whatever the number of xdist workers) and
:func:`matrix`, which keeps a test matrix's full product for ``make test-full`` while the default
suite runs a covering subset (every value of every axis at least once)."""

from __future__ import annotations

import fcntl
import itertools
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

# Random-weight models: 2 layers, hidden 64, 4 heads (2 KV heads), 96 tokens.
SMALL = dict(vocab_size=96, max_position_embeddings=128, initializer_range=0.1)
LLAMA = dict(SMALL, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2)
FAMILIES = {
    "llama": dict(SMALL, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2),
    "qwen2": dict(SMALL, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2),
    "mistral": dict(SMALL, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=1, sliding_window=8),  # every layer windowed
    "gpt2": dict(vocab_size=96, n_positions=128, initializer_range=0.1, n_embd=64, n_layer=2, n_head=4,
                 bos_token_id=0, eos_token_id=0),
    "opt": dict(SMALL, hidden_size=64, ffn_dim=96, num_hidden_layers=2, num_attention_heads=4,
                word_embed_proj_dim=64, pad_token_id=95),
    # QK-norm; explicit head_dim
    "qwen3": dict(SMALL, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=16),
    # GeGLU, sandwich norms, scaled embeddings, soft-capping, alternating 4-token sliding window
    "gemma2": dict(SMALL, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2, head_dim=16, sliding_window=4, attn_logit_softcapping=2.0,
                   final_logit_softcapping=5.0),
    # QK-norm, local (4-token window) and global layers with their own RoPE bases
    "gemma3_text": dict(SMALL, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=2, head_dim=16, sliding_window=4,
                        layer_types=["sliding_attention", "full_attention"]),
    # fused qkv and gate_up projections
    "phi3": dict(SMALL, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, pad_token_id=0),
    # parallel residual, partial rotary
    "gpt_neox": dict(SMALL, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                     rotary_pct=0.25, eos_token_id=0, bos_token_id=0),
    # norms after attention and MLP, QK-norm over all heads
    "olmo2": dict(SMALL, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, pad_token_id=0, eos_token_id=0, bos_token_id=0),
    # embedding, residual, attention and logit multipliers
    "granite": dict(SMALL, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, embedding_multiplier=2.0, residual_multiplier=0.5,
                    attention_multiplier=0.2, logits_scaling=0.5),
    # mixtures of experts: 4 experts, top-2 (Qwen3-MoE: its own expert width, QK-norm)
    "mixtral": dict(SMALL, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2, sliding_window=None),
    "qwen3_moe": dict(SMALL, hidden_size=64, intermediate_size=96, moe_intermediate_size=48, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16, num_experts=4,
                      num_experts_per_tok=2),
    # OLMoE: softmax weights not renormalised over the chosen experts, QK-norm over all heads
    "olmoe": dict(SMALL, hidden_size=64, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=4, num_experts=4, num_experts_per_tok=2, norm_topk_prob=False,
                  pad_token_id=0, eos_token_id=0, bos_token_id=0),
}
# One layer, 2 heads over 1 KV head: the smallest model the FPGA flow compiles (snapshots, RTL projects).
FPGA_SMALL = dict(vocab_size=96, max_position_embeddings=64, hidden_size=64, intermediate_size=128,
                  num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1)

# The bundled model's recipe for each accelerator engine.
ENGINE_RECIPES = {
    "int8": "",
    "w4g128": "quantize{bits=4,group=128}",
    "w4-2of4": "sparsify{pattern=2:4},quantize{bits=4,group=128}",
    "w2-lut": "quantize{bits=2,group=128},lut-mpgemm",
}
# Token ids of the bundled model: 20 tokens, so that prefill spans two 16-row buckets.
PROMPT = [1, 72, 271, 400, 291, 261, 300, 90, 77, 500, 33, 18, 260, 261, 262, 263, 264, 265, 266, 267]
# A step program's attention mask as the ONNX import of a causal LM export computes it (IR text): the padding
# row from the step's mask (%flat), the new tokens' positions (%queries) and the cache's (%keys4).
ONNX_STEP_MASK = """\
    %zero = constant() {value = 0.0, shape = [], dtype = f32} : tensor<f32>
    %seen = eq(%mask, %zero) : tensor<1x1xLxL+Pxbool>
    %seen_int = cast(%seen) {dtype = i64} : tensor<1x1xLxL+Pxi64>
    %attention_mask = reduce_max(%seen_int) {axes = [1, 2], keepdim = false} : tensor<1xL+Pxi64>
    %attended = cast(%attention_mask) {dtype = bool} : tensor<1xL+Pxbool>
    %flat = reshape(%attended) {shape = [L+P]} : tensor<L+Pxbool>
    %steps = iota() {start = 0, end = L, step = 1, dtype = i64} : tensor<Lxi64>
    %past = iota() {start = P, end = P+1, dtype = i64} : tensor<1xi64>
    %past0 = reshape(%past) {shape = []} : tensor<i64>
    %positions = add(%steps, %past0) : tensor<Lxi64>
    %queries = reshape(%positions) {shape = [1, 1, L, 1]} : tensor<1x1xLx1xi64>
    %keys = iota() {start = 0, end = L+P, step = 1, dtype = i64} : tensor<L+Pxi64>
    %keys4 = reshape(%keys) {shape = [1, 1, 1, L+P]} : tensor<1x1x1xL+Pxi64>
"""


def onnx_sdpa(v: str) -> str:
    """torch.onnx's scaled dot-product attention as the ONNX import writes it (IR text): the queries %q and the
    transposed keys %kt each scaled by the root of the scale, plus %bias, softmax, NaNs zeroed, times ``v``."""
    return f"""\
    %c = constant() {{value = 0.7071067690849304, shape = [], dtype = f32}} : tensor<f32>
    %qs = mul(%q, %c) : tensor<1x2xLx4xf32>
    %kts = mul(%kt, %c) : tensor<1x2x4xL+Pxf32>
    %scores = matmul(%qs, %kts) : tensor<1x2xLxL+Pxf32>
    %biased = add(%scores, %bias) : tensor<1x2xLxL+Pxf32>
    %p = softmax(%biased) {{axis = 3}} : tensor<1x2xLxL+Pxf32>
    %nan = ne(%p, %p) : tensor<1x2xLxL+Pxbool>
    %p0 = where(%nan, %zero, %p) : tensor<1x2xLxL+Pxf32>
    %y = matmul(%p0, %{v}) : tensor<1x2xLx4xf32>"""
# Token ids for the random-weight families.
SMALL_PROMPT = [3, 17, 42, 8, 25, 61, 9]


def matrix(axes: Sequence[Sequence[object]], default: Sequence[tuple]) -> list:
    """The product of ``axes`` as pytest parameters, those outside ``default`` marked ``slow``.
    ``default`` must hold every value of every axis at least once."""
    for i, axis in enumerate(axes):
        missing = [v for v in axis if all(case[i] != v for case in default)]
        assert not missing, f"the default cases leave out {missing} of axis {i}"
    cases = []
    for values in itertools.product(*axes):
        marks = [] if values in default else [pytest.mark.slow]
        label = "-".join("x".join(map(str, v)) if isinstance(v, tuple) else str(v) for v in values)
        cases.append(pytest.param(*values, marks=marks, id=label))
    return cases


def shared_folder(tmp_path_factory: pytest.TempPathFactory, name: str, make: Callable[[Path], None]) -> Path:
    """The folder ``name`` (a relative path) of this test run, made once by ``make(folder)`` whichever xdist worker asks
    first (the others wait on its lock); a failed ``make`` leaves nothing, so the next asker tries again."""
    root = tmp_path_factory.getbasetemp()
    if root.name.startswith("popen-gw"):  # an xdist worker: share its parent with the other workers
        root = root.parent
    folder = root / "shared" / name
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f".{folder.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder.parent / f".{folder.name}.done").exists():
            shutil.rmtree(folder, ignore_errors=True)
            make(folder)
            (folder.parent / f".{folder.name}.done").touch()
    return folder


def compile_bundled(recipe: str, out: Path, source: Path | str = "llmc-tiny", board: str = "u280") -> None:
    """``compile_project`` of the bundled model (or its saved ``source``) compressed by the pipeline
    ``recipe``, for ``board``."""
    import llmc
    import llmc.compiler.passes  # noqa: F401  (registers the passes)
    from llmc.backends.fpga.flow import compile_project
    from llmc.compiler.pipeline import PassContext, parse_pipeline, run_pipeline

    tiny = llmc.load(source)
    module = run_pipeline(tiny.module, parse_pipeline(recipe), PassContext()) if recipe else tiny.module
    compile_project(module, board, out, tokenizer_json=tiny.tokenizer_json)


def reseal(folder: Path) -> None:
    """Rewrite ``folder``'s manifest for the files it holds now, as a deliberate edit would: the tests of
    the checks behind the manifest (program digests, container checksums) get past it this way."""
    from llmc.manifest import MANIFEST, manifest_text

    files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
             if p.is_file() and p.name != MANIFEST and "__pycache__" not in p.parts}
    (folder / MANIFEST).write_text(manifest_text(files, "project"))


def refused_in_one_line(path: Path, message: str, prefix: str, out: Path, capsys: pytest.CaptureFixture) -> None:
    """``llmc.load(path)`` refuses with an error matching ``message`` on one line starting with ``prefix``, and
    ``llmc import path -o out`` prints one ``llmc: error:`` line and exits with 2."""
    import llmc
    from llmc.cli import main
    from llmc.errors import LlmcError

    with pytest.raises(LlmcError, match=message) as info:
        llmc.load(path)
    assert "\n" not in str(info.value) and str(info.value).startswith(prefix)
    capsys.readouterr()
    assert main(["import", str(path), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("llmc: error: ") and err.count("\n") == 1


def config_file(folder: Path, values: dict) -> Path:
    """``folder/config.json`` holding ``values``, for ``--config``."""
    import json

    path = folder / "config.json"
    path.write_text(json.dumps(values))
    return path
