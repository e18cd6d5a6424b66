"""The bundled model's LUT layers on TVM kernels inside llmc's runtime, against the interpreter."""

from __future__ import annotations

import numpy as np
import pytest
from zoo import LLAMA, config_file

import llmc
import llmc.compiler.passes  # noqa: F401  (registers the passes)
from llmc.cli import main
from llmc.compiler.pipeline import PassContext, parse_pipeline, run_pipeline
from llmc.errors import LlmcError
from llmc.generate.interpreter import causal_mask
from llmc.ir import run_function

lut_runtime = pytest.importorskip("llmc.backends.tvm.lut_runtime")


# float tables agree to float rounding; the TVM int8 kernel quantizes its tables its own way
# (docs/lut.md's bound holds for both), so int8 results agree to the table quantization error
@pytest.mark.parametrize("recipe, tolerance", [("quantize{bits=2,group=128},lut-mpgemm", 1e-3),
                                               ("quantize{bits=4,group=128},lut-mpgemm{table_bits=8}", 2e-2)])
def test_tvm_lut_layers_match_the_interpreter(recipe: str, tolerance: float) -> None:
    model = llmc.load("llmc-tiny")
    module = run_pipeline(model.module, parse_pipeline(recipe), PassContext(tokenizer_json=model.tokenizer_json))
    ids = model.encode("A hacker is")
    inputs = {"input_ids": np.array([ids]), "mask": causal_mask(len(ids), 0), "position_ids": np.arange(len(ids))[None]}
    try:
        kernels = lut_runtime.lut_kernels(module)
        fast = run_function(module, "prefill", inputs, kernels=kernels)["logits"]
    except LlmcError as e:  # the kernels need AVX-512 VBMI/VNNI
        pytest.skip(str(e))
    reference = run_function(module, "prefill", inputs)["logits"]
    assert np.abs(fast - reference).max() / np.abs(reference).max() < tolerance
    tokens = llmc.Model(module).run(prompt_ids=ids, max_new_tokens=12, stop=False).tokens
    with_tvm = [t for t, _ in llmc.Model(module).stream(prompt_ids=ids, max_new_tokens=12, stop=False,
                                                         kernels=lut_runtime.lut_kernels(module))]
    assert with_tvm == tokens


def test_a_cpu_without_the_kernels_extensions_gets_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    from llmc.backends.tvm import build

    monkeypatch.setattr(build.codegen, "llvm_cpu_has_features", lambda features, target: "avx512f" in features)
    out = tmp_path / "w2lut.llmc"
    assert main(["opt", "llama", "-p", "quantize{bits=2,group=64},lut-mpgemm", "-o", str(out), "--config",
                 str(config_file(tmp_path, LLAMA))]) == 0
    capsys.readouterr()
    assert main(["run", str(out), "--prompt-ids", "1,2", "--lut-kernels", "tvm"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "this CPU lacks avx512bw, avx512vbmi, avx512vnni" in err
