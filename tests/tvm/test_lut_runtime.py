"""The bundled model's LUT layers on TVM kernels inside llmc's runtime, against the interpreter."""

from __future__ import annotations

import numpy as np
import pytest
from zoo import LLAMA, config_file

import llmc
import llmc.compiler.passes  # noqa: F401  (registers the passes)
from llmc.cli import main
from llmc.compiler.pipeline import PassContext, parse_pipeline, run_pipeline
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
    fast = run_function(module, "prefill", inputs, kernels=lut_runtime.lut_kernels(module))["logits"]
    reference = run_function(module, "prefill", inputs)["logits"]
    assert np.abs(fast - reference).max() / np.abs(reference).max() < tolerance
    tokens = llmc.Model(module).run(prompt_ids=ids, max_new_tokens=12, stop=False).tokens
    with_tvm = [t for t, _ in llmc.Model(module).stream(prompt_ids=ids, max_new_tokens=12, stop=False,
                                                         kernels=lut_runtime.lut_kernels(module))]
    assert with_tvm == tokens


def test_run_names_its_variant_and_refuses_one_the_cpu_lacks_in_one_line(
        monkeypatch: pytest.MonkeyPatch, tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    from llmc.backends.tvm import lut_isa

    out = tmp_path / "w2lut.llmc"
    assert main(["opt", "llama", "-p", "quantize{bits=2,group=64},lut-mpgemm", "-o", str(out), "--config",
                 str(config_file(tmp_path, LLAMA))]) == 0
    capsys.readouterr()
    assert main(["run", str(out), "--prompt-ids", "1,2", "--max-new-tokens", "4", "--json"]) == 0
    reference = capsys.readouterr().out
    for variant in ("avx2", "portable"):
        assert main(["run", str(out), "--prompt-ids", "1,2", "--max-new-tokens", "4", "--json", "--lut-kernels", "tvm",
                     "--lut-variant", variant]) == 0
        captured = capsys.readouterr()
        assert captured.out == reference
        assert captured.err.startswith(f"llmc: LUT kernels: {variant} (")
    assert main(["run", str(out), "--prompt-ids", "1,2", "--max-new-tokens", "2", "--tvm", "cpu", "--lut-variant", "avx2"]) == 0
    assert "llmc: LUT kernels: avx2 (vpshufb" in capsys.readouterr().err

    monkeypatch.setattr(lut_isa.codegen, "llvm_cpu_has_features", lambda features, target: features == ["avx512f"])
    for extra in (["--lut-kernels", "tvm"], ["--tvm", "cpu"]):
        assert main(["run", str(out), "--prompt-ids", "1,2", "--lut-variant", "avx512", *extra]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "this CPU lacks avx512bw, avx512vbmi, avx512vnni: use --lut-variant auto" in err
    assert main(["run", str(out), "--prompt-ids", "1,2", "--lut-kernels", "tvm", "--lut-variant", "sse9"]) == 2
    assert "unknown LUT kernel variant 'sse9'" in capsys.readouterr().err
