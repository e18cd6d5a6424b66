"""``llmc opt`` and ``llmc eval`` from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import llmc
from llmc.cli import main

CONFIG = {"vocab_size": 96, "max_position_embeddings": 64, "hidden_size": 64, "intermediate_size": 128,
          "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 2}


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "config.json"
    path.write_text(json.dumps(CONFIG))
    return path


def test_opt_writes_a_compressed_program_that_runs(capsys: pytest.CaptureFixture[str], config_file: Path,
                                                   tmp_path: Path) -> None:
    out = tmp_path / "w4.llmc"
    args = ["opt", "llama", "--config", str(config_file), "-p", "quantize{bits=4,group=32}", "-o", str(out), "--json"]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["bits_per_weight"] == pytest.approx(4 + 16 / 32)
    assert report["passes"]["quantize"]["bits"] == 4 and len(report["timings"]) == 1
    model = llmc.load(out)
    assert any(p.type.encodings for p in model.module.params.values())
    assert len(model.run(prompt_ids=[3, 4], max_new_tokens=3, stop=False).tokens) == 3
    assert main(args) == 2  # exists: refused
    assert "exists" in capsys.readouterr().err


def test_opt_recipe_and_print_after(capsys: pytest.CaptureFixture[str], config_file: Path, tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("passes:\n  - pass: sparsify\n    pattern: '2:4'\n  - pass: quantize\n    bits: 4\n    group: 32\n")
    out = tmp_path / "s.llmc"
    assert main(["opt", "llama", "--config", str(config_file), "--recipe", str(recipe), "-o", str(out),
                 "--print-after", "sparsify"]) == 0
    captured = capsys.readouterr()
    assert "// after sparsify" in captured.err and "#sparse<2:4>" in captured.err
    assert "#sparse<2:4>" in out.read_text()


@pytest.mark.parametrize("args, message", [
    (["-p", "quantize{bits=1}"], "bits must be 2..8"),
    (["-p", "quantize{group=48}"], "does not divide"),
    (["-p", "nope"], "unknown pass"),
    (["-p", "quantize{bits=4,bits=2}"], "option 'bits' is given twice"),
    (["-p", "mixed-precision{budget=nan}"], "option budget=nan is not a finite number"),
    (["-p", "mixed-precision{budget=inf}"], "option budget=inf is not a finite number"),
    (["-p", "quantize{bits=4,group=32},quantize{bits=4,group=32}"], "changes nothing in"),
    (["--recipe", "BOTH"], "give 'pipeline' or 'passes', not both"),
    (["--recipe", "BINARY"], "not a text file"),
    (["--recipe", "UNKNOWN"], "unknown key 'pipelines'"),
])
def test_bad_pipelines_exit_2_with_one_line(capsys: pytest.CaptureFixture[str], config_file: Path, tmp_path: Path,
                                            args: list[str], message: str) -> None:
    out = tmp_path / "x.llmc"
    recipes = {"BOTH": "pipeline: quantize\npasses:\n  - pass: sparsify\n", "UNKNOWN": "pipelines: quantize\n"}
    if args[0] == "--recipe":
        path = tmp_path / "r.yaml"
        path.write_bytes(b"\xff\xfe\x00\x01" if args[1] == "BINARY" else recipes[args[1]].encode())
        args = ["--recipe", str(path)]
    assert main(["opt", "llama", "--config", str(config_file), *args, "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and not out.exists()


def test_eval_json_on_the_bundled_model(capsys: pytest.CaptureFixture[str], tiny_llmc: Path) -> None:
    assert main(["eval", str(tiny_llmc), "--windows", "2", "--json"]) == 0
    fp32 = json.loads(capsys.readouterr().out)
    assert set(fp32) >= {"perplexity", "bits_per_weight", "seconds"}
    assert fp32["bits_per_weight"] == 32.0 and 1 < fp32["perplexity"] < 100
    assert main(["eval", str(tiny_llmc), "--windows", "2", "--json", "-p", "quantize{bits=4,group=128}"]) == 0
    w4 = json.loads(capsys.readouterr().out)
    assert w4["bits_per_weight"] == pytest.approx(4.125)
    assert abs(w4["perplexity"] / fp32["perplexity"] - 1) < 0.1
