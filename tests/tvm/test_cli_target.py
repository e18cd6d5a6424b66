"""``llmc run --tvm`` and ``Model.stream(device=...)``: the same generation loop and sampling on a
TVM-compiled model as on the interpreter; bad combinations fail in one line with exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("tvm")
from tvm_cases import model, prompt  # noqa: E402

from llmc.backends.tvm.compile import compile_model  # noqa: E402
from llmc.cli import main  # noqa: E402
from llmc.generate.loop import SamplingOptions  # noqa: E402


def run_json(capsys: pytest.CaptureFixture[str], source: Path, *extra: str) -> dict:
    code = main(["run", str(source), "--prompt", "A hacker is", "--max-new-tokens", "10", "--json", *extra])
    assert code == 0
    return json.loads(capsys.readouterr().out)


def last_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The error line (a library imported earlier in the session may have printed progress before it)."""
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_llmc_run_on_the_cpu_target_matches_the_interpreter(capsys: pytest.CaptureFixture[str], tiny_llmc: Path) -> None:
    assert run_json(capsys, tiny_llmc, "--tvm", "cpu") == run_json(capsys, tiny_llmc)


def test_sampling_is_the_interpreters() -> None:
    m = model("llmc-tiny")
    device = compile_model(m, "cpu")
    ids = prompt("llmc-tiny")
    for options in (SamplingOptions("top-k", top_k=5, seed=3), SamplingOptions("top-p", top_p=0.8, seed=4)):
        on_tvm = [t for t, _ in m.stream(prompt_ids=ids, max_new_tokens=12, sampling=options, device=device)]
        assert on_tvm == [t for t, _ in m.stream(prompt_ids=ids, max_new_tokens=12, sampling=options)]


@pytest.mark.parametrize("extra, message", [
    (["--tvm", "cpu", "--device", "sim"], "give --device or --tvm, not both"),
    (["--tvm", "cpu", "--lut-kernels", "tvm"], "--lut-kernels applies to the interpreter"),
])
def test_conflicting_options_fail_in_one_line(capsys: pytest.CaptureFixture[str], extra: list[str], message: str) -> None:
    assert main(["run", "llmc-tiny", "--prompt", "x", *extra]) == 2
    assert message in last_line(capsys)


def test_cuda_without_a_gpu_fails_in_one_line(capsys: pytest.CaptureFixture[str], tiny_llmc: Path) -> None:
    import tvm

    try:
        import cupy

        has_gpu = cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        has_gpu = False
    if tvm.cuda(0).exist or has_gpu:
        pytest.skip("an NVIDIA GPU is present")
    assert main(["run", str(tiny_llmc), "--prompt", "x", "--tvm", "cuda"]) == 2
    assert last_line(capsys).startswith("llmc: error: the cuda target: no NVIDIA GPU")
