"""The report's accuracy of lowering on the bundled model: the lowered program's perplexity next
to the unlowered module's (the same number ``llmc eval`` gives), token agreement, and the cases
where nothing is measured."""

from __future__ import annotations

import json

import pytest

import llmc
import llmc.compiler.passes  # noqa: F401  (registers the passes)
from llmc.backends.fpga.accuracy import lowering_accuracy
from llmc.backends.fpga.flow import compile_project
from llmc.backends.fpga.lower import lower
from llmc.cli import main
from llmc.compiler.evaluate import perplexity
from llmc.compiler.passes.linear import clone
from llmc.compiler.pipeline import PassContext, parse_pipeline, run_pipeline


@pytest.fixture(scope="module")
def w4(tiny_llmc) -> llmc.Model:
    tiny = llmc.load(tiny_llmc)
    module = run_pipeline(tiny.module, parse_pipeline("quantize{bits=4,group=128}"), PassContext())
    return llmc.Model(module, tiny.tokenizer_json)


def test_report_states_the_lowered_and_unlowered_perplexity(w4: llmc.Model, tmp_path) -> None:
    compile_project(w4.module, "u280", tmp_path / "p", tokenizer_json=w4.tokenizer_json, eval_windows=2)
    accuracy = json.loads((tmp_path / "p" / "report.json").read_text())["accuracy"]
    assert accuracy["measured"] and accuracy["windows"] == 2 and accuracy["tokens"] == 2 * 255
    ppl = accuracy["perplexity"]
    assert ppl["unlowered"] == pytest.approx(perplexity(w4.module, w4.tokenizer_json, 2).perplexity, rel=1e-12)
    assert ppl["lowered"] == pytest.approx(ppl["unlowered"], rel=0.05)
    assert accuracy["top1_agreement"] > 0.9
    greedy = accuracy["greedy"]
    assert greedy["tokens"] == 32 and greedy["identical"] >= 24
    assert (greedy["first_difference"] is None) == (greedy["identical"] == 32)
    text = (tmp_path / "p" / "report.md").read_text()
    assert "## Accuracy of lowering" in text and f"| lowered | {ppl['lowered']:.3f} |" in text


def test_llmc_compile_measures_by_default_and_skips_on_request(tiny_llmc, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setattr("llmc.cli.fpga.EVAL_WINDOWS", 1)  # the default, made cheaper
    assert main(["compile", str(tiny_llmc), "-o", str(tmp_path / "a")]) == 0
    assert "perplexity on 1 windows: lowered" in capsys.readouterr().out
    assert main(["compile", str(tiny_llmc), "--eval-windows", "0", "-o", str(tmp_path / "b")]) == 0
    report = json.loads((tmp_path / "b" / "report.json").read_text())
    assert report["accuracy"] == {"measured": False, "reason": "not asked for (--eval-windows 0)"}
    assert "Not measured: not asked for" in (tmp_path / "b" / "report.md").read_text()
    assert main(["compile", str(tiny_llmc), "--eval-windows", "-1", "-o", str(tmp_path / "c")]) == 2
    assert "--eval-windows must be 0 or more" in capsys.readouterr().err and not (tmp_path / "c").exists()


def test_nothing_is_measured_without_weights_or_tokenizer(w4: llmc.Model) -> None:
    hw = lower(w4.module, 64)
    assert lowering_accuracy(w4.module, hw, None, 2, 64)["reason"] == "the model has no tokenizer"
    bare = clone(w4.module)
    for p in bare.params.values():
        p.data = None
    assert lowering_accuracy(bare, lower(bare, 64), w4.tokenizer_json, 2, 64)["reason"] == \
        "the model has no weights (shapes only)"


def test_a_context_shorter_than_a_window_is_measured_in_windows_of_the_context(w4: llmc.Model) -> None:
    accuracy = lowering_accuracy(w4.module, lower(w4.module, 48), w4.tokenizer_json, 2, 48)
    assert accuracy["measured"] and accuracy["tokens"] == 2 * 47
    assert 0 < accuracy["greedy"]["tokens"] <= 32
