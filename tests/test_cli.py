"""The ``llmc`` command line, run in-process through ``main`` (plus one real process).

The models are a small random Llama (vocab 128, hidden 64, 2 layers, 4 heads, 2 KV heads) saved
as a Hugging Face directory with a character-level tokenizer, and that directory imported once
as a ``.llmc`` file; each import costs seconds, so the fixtures are shared by the module.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import cast

import pytest

from llmc import cli
from llmc.cli import common, main
from llmc.io import weights_path
from llmc.model import BUNDLED, Model
from llmc.sizes import human_bytes

CONFIG = {
    "vocab_size": 128,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 128,
}
# Hand-computed from CONFIG: q 64x64, k and v 32x64 (2 KV heads of 16), o 64x64, gate and up
# 128x64, down 64x128, two norms of 64.
LAYER_PARAMS = 4096 + 2048 + 2048 + 4096 + 3 * 8192 + 2 * 64
EMBED_PARAMS = HEAD_PARAMS = 128 * 64
OTHER_PARAMS = 64 + 8  # final norm, rotary inv_freq (head_dim / 2)
TOTAL_PARAMS = EMBED_PARAMS + 2 * LAYER_PARAMS + HEAD_PARAMS + OTHER_PARAMS
KV_BYTES_PER_TOKEN = 2 * 2 * 2 * 16 * 4  # layers x (k, v) x KV heads x head_dim x f32
PROMPT = "hello world"


def _tokenizer_json() -> str:
    """A character-level tokenizer: <unk>, <s>, </s>, then printable ASCII (98 tokens)."""
    from tokenizers import Tokenizer, decoders, models

    specials = ["<unk>", "<s>", "</s>"]
    vocab = {t: i for i, t in enumerate([*specials, *map(chr, range(32, 127))])}
    tokenizer = Tokenizer(models.BPE(vocab, [], unk_token="<unk>"))
    tokenizer.add_special_tokens(specials)
    tokenizer.decoder = decoders.Fuse()
    return tokenizer.to_str()


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("config") / "tiny.json"
    path.write_text(json.dumps(CONFIG))
    return path


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from llmc.compiler.frontend import hf

    path = tmp_path_factory.mktemp("hf") / "tiny-llama"
    model = hf.build_model(hf.config_from_dict({"model_type": "llama", **CONFIG}, "test config"), seed=1)
    model.save_pretrained(path)
    (path / "tokenizer.json").write_text(_tokenizer_json())
    return path


@pytest.fixture(scope="module")
def imported(hf_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """``llmc import hf_dir -o m.llmc``: the .llmc path and what the command printed."""
    out = tmp_path_factory.mktemp("llmc") / "m.llmc"
    with contextlib.redirect_stdout(io.StringIO()) as stdout:
        assert main(["import", str(hf_dir), "-o", str(out)]) == 0
    return out, stdout.getvalue()


@pytest.fixture
def llmc_file(imported: tuple[Path, str]) -> Path:
    return imported[0]


def _copy_llmc(src: Path, dest_dir: Path, suffixes: tuple[str, ...]) -> Path:
    """Copy ``src`` (a .llmc) and the siblings with the given suffixes into ``dest_dir``."""
    for suffix in suffixes:
        shutil.copy(src.with_suffix(suffix), dest_dir / f"m{suffix}")
    return dest_dir / "m.llmc"


def _run_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    assert main(["run", *args, "--json"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1, "--json prints exactly one line"
    return json.loads(out)


# ---------------------------------------------------------------------------------------------
# import and run
# ---------------------------------------------------------------------------------------------


def test_import_writes_ir_weights_and_tokenizer(imported: tuple[Path, str]) -> None:
    path, printed = imported
    written = [path, path.with_suffix(".safetensors"), path.with_suffix(".tokenizer.json")]
    assert all(p.is_file() for p in written)
    assert path.read_text().startswith('module "tiny-llama"')
    assert [line.split()[1] for line in printed.splitlines()] == [str(p) for p in written]


def test_run_json_schema(capsys: pytest.CaptureFixture[str], llmc_file: Path) -> None:
    result = _run_json(capsys, str(llmc_file), "--prompt-ids", "1,40,41", "--max-new-tokens", "5")
    assert set(result) == {"tokens", "text"}
    assert 1 <= len(result["tokens"]) <= 5
    assert all(isinstance(t, int) and 0 <= t < CONFIG["vocab_size"] for t in result["tokens"])
    assert isinstance(result["text"], str)


def test_run_streams_the_json_text(capsys: pytest.CaptureFixture[str], llmc_file: Path) -> None:
    args = [str(llmc_file), "--prompt", PROMPT, "--max-new-tokens", "8", "--sample", "top-k", "--top-k", "5", "--seed", "3"]
    result = _run_json(capsys, *args)
    assert main(["run", *args]) == 0
    captured = capsys.readouterr()
    assert captured.out == result["text"] + "\n"
    assert captured.err == ""


def test_run_sampling_is_seeded(capsys: pytest.CaptureFixture[str], llmc_file: Path) -> None:
    args = [str(llmc_file), "--prompt-ids", "1,50", "--max-new-tokens", "8", "--sample", "top-p", "--top-p", "0.95",
            "--temperature", "1.5", "--seed", "7"]
    assert _run_json(capsys, *args) == _run_json(capsys, *args)


def test_run_without_tokenizer_prints_ids(capsys: pytest.CaptureFixture[str], llmc_file: Path, tmp_path: Path) -> None:
    bare = _copy_llmc(llmc_file, tmp_path, (".llmc", ".safetensors"))
    result = _run_json(capsys, str(bare), "--prompt-ids", "1,40", "--max-new-tokens", "4")
    assert result["text"] is None
    assert main(["run", str(bare), "--prompt-ids", "1,40", "--max-new-tokens", "4"]) == 0
    assert capsys.readouterr().out == " ".join(map(str, result["tokens"])) + "\n"


def test_import_force_replaces_stale_files(capsys: pytest.CaptureFixture[str], llmc_file: Path, config_file: Path,
                                           tmp_path: Path) -> None:
    target = _copy_llmc(llmc_file, tmp_path, (".llmc", ".safetensors", ".tokenizer.json"))
    args = ["import", "llama", "--config", str(config_file), "--shapes-only", "-o", str(target)]
    assert main(args) == 2
    assert "exists (use --force" in capsys.readouterr().err
    assert main([*args, "--force"]) == 0
    assert capsys.readouterr().out == f"wrote {target} ({human_bytes(target.stat().st_size)})\n"
    # the old weights and tokenizer would otherwise be read back with the new IR
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.llmc"]
    assert main(["show", str(target), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["has_weights"] is False


# ---------------------------------------------------------------------------------------------
# show
# ---------------------------------------------------------------------------------------------


def test_show_json_numbers(capsys: pytest.CaptureFixture[str], config_file: Path) -> None:
    assert main(["show", "llama", "--config", str(config_file), "--shapes-only", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["tensors"], report["params"], report["bytes"]) == (22, TOTAL_PARAMS, 4 * TOTAL_PARAMS)
    groups = {(g["kind"], g["index"]): g["params"] for g in report["groups"]}
    assert groups == {("embedding", None): EMBED_PARAMS, ("layer", 0): LAYER_PARAMS, ("layer", 1): LAYER_PARAMS,
                      ("head", None): HEAD_PARAMS, ("other", None): OTHER_PARAMS}
    assert report["kv_bytes_per_token"] == KV_BYTES_PER_TOKEN
    assert report["has_weights"] is False
    prefill, decode = report["functions"]
    assert (prefill["name"], prefill["symbols"], decode["name"], decode["symbols"]) == ("prefill", ["L"], "decode", ["P"])
    assert prefill["inputs"][0] == {"name": "input_ids", "type": "tensor<1xLxi64>"}
    assert decode["outputs"][0] == {"name": "logits", "type": "tensor<1x1x128xf32>"}
    assert prefill["ops"]["param"] == 22 and sum(prefill["ops"].values()) == prefill["nodes"]


def test_show_text(capsys: pytest.CaptureFixture[str], llmc_file: Path) -> None:
    assert main(["show", str(llmc_file)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "model tiny-llama (llama)"
    assert lines[1] == f"parameters: 22 tensors, {TOTAL_PARAMS:,} parameters, {human_bytes(4 * TOTAL_PARAMS)}"
    layer0 = next(line for line in lines if line.strip().startswith("layer 0"))
    assert f"{LAYER_PARAMS:,} params" in layer0 and "144.5 KiB" in layer0
    assert "KV cache: 512 B per token, 64.0 KiB at 128 tokens" in lines
    assert "func @decode over P: " in "\n".join(lines)
    assert "  in  %past_k_0: tensor<1x2xPx16xf32>" in lines


def test_text_stream_holds_back_a_split_character() -> None:
    class ByteTokenizer:
        tokenizer_json = "{}"

        def decode_text(self, ids: list[int]) -> str:
            return bytes(ids).decode("utf-8", errors="replace")

    stream = common.TextStream(cast(Model, ByteTokenizer()))
    assert [stream.push(b) for b in "aé!".encode()] == ["a", "", "é", "!"]
    assert stream.text == "aé!"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_only_on_a_terminal_and_never_with_json(monkeypatch: pytest.MonkeyPatch) -> None:
    parser = cli.build_parser()
    show, show_json = parser.parse_args(["show", "x"]), parser.parse_args(["show", "x", "--json"])
    assert not common.progress_enabled(show)  # stderr is captured here, not a terminal
    monkeypatch.setattr(sys, "stderr", _Terminal())
    assert common.progress_enabled(show) and not common.progress_enabled(show_json)


def test_activity_bar_appears_after_a_second(monkeypatch: pytest.MonkeyPatch) -> None:
    stderr = _Terminal()
    monkeypatch.setattr(sys, "stderr", stderr)
    with common.activity("quick", True):
        pass
    with common.activity("slow", True):
        time.sleep(1.3)
    assert "quick" not in stderr.getvalue()
    assert "slow 00:01" in stderr.getvalue()


ALL_COMMANDS = ("import", "show", "run", "opt", "eval", "compile", "build", "csim", "simulate", "verify", "deploy",
                "calibrate", "sweep")


def test_python_dash_m_lists_every_command() -> None:
    out = subprocess.run([sys.executable, "-m", "llmc.cli", "--help"], capture_output=True, text=True, check=True).stdout
    listed = [line.split()[0] for line in out.split("COMMAND\n", 1)[1].splitlines() if re.match(r"    \S", line)]
    assert tuple(listed) == ALL_COMMANDS == tuple(cli.COMMANDS)


@pytest.mark.parametrize(("argv", "dest", "value"), [
    (["compile", "m", "-o", "d", "--board", "u55c"], "board", "u55c"),
    (["compile", "m", "-o", "d", "--target", "u55c"], "board", "u55c"),
    (["compile", "m", "-o", "d"], "board", "u280"),
    (["build", "d", "--mode", "hw_emu"], "mode", "hw_emu"),
    (["build", "d", "--target", "sw_emu"], "mode", "sw_emu"),
    (["run", "m", "--prompt", "x", "--tvm", "opencl"], "tvm", "opencl"),
    (["run", "m", "--prompt", "x", "--target", "cpu"], "tvm", "cpu"),
    (["run", "m", "--prompt", "x"], "tvm", None),
])
def test_each_meaning_of_target_has_its_own_option(argv: list[str], dest: str, value: str | None) -> None:
    args = cli.build_parser().parse_args(argv)
    assert getattr(args, dest) == value and not hasattr(args, "target")


def test_the_earlier_target_spelling_is_not_advertised(capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("compile", "build", "run"):
        with pytest.raises(SystemExit):
            main([name, "--help"])
        assert "--target" not in capsys.readouterr().out


@pytest.mark.parametrize(("n", "text"), [(0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"), (3 << 30, "3.0 GiB"),
                                         (5 << 40, "5120.0 GiB")])
def test_human_bytes(n: int, text: str) -> None:
    assert human_bytes(n) == text


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def bad_inputs(tmp_path: Path, llmc_file: Path, config_file: Path) -> dict[str, tuple[list[str], str]]:
    """Name -> (arguments, a fragment of the one-line error)."""
    corrupt_dir = tmp_path / "corrupt"
    corrupt_dir.mkdir()
    (corrupt_dir / "config.json").write_text('{"model_type": "llama",')
    bert_dir = tmp_path / "bert"
    bert_dir.mkdir()
    (bert_dir / "config.json").write_text('{"model_type": "t5"}')  # an encoder-decoder: no causal-LM class
    broken = tmp_path / "broken.llmc"
    lines = llmc_file.read_text().splitlines()
    lines[2] = "  param ??? garbage"
    broken.write_text("\n".join(lines))
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{nope")
    no_weights = tmp_path / "w" / "m.llmc"
    no_weights.parent.mkdir()
    shutil.copy(llmc_file, no_weights)
    swapped = tmp_path / "s" / "m.llmc"  # this IR beside the weights of a model with one changed attribute
    swapped.parent.mkdir()
    shutil.copy(weights_path(llmc_file), weights_path(swapped))
    swapped.write_text(llmc_file.read_text().replace("max_position", "max_position_", 1))
    model = str(llmc_file)
    return {
        "missing file": (["show", str(tmp_path / "missing.llmc")], "no such file or directory"),
        "corrupt config.json": (["show", str(corrupt_dir)], "config.json: corrupt JSON"),
        "corrupt .llmc": (["show", str(broken)], "broken.llmc: line 3"),
        "unknown architecture name": (["show", "gpt5"], "not a bundled model (llmc-tiny) or a transformers causal-LM"),
        "unsupported architecture": (["show", str(bert_dir)], "'t5' is not a causal language model architecture"),
        "corrupt --config": (["show", "llama", "--config", str(bad_json)], "bad.json: corrupt JSON"),
        "missing --config": (["show", "llama", "--config", str(tmp_path / "none.json")], "none.json: No such file"),
        "--config on a file": (["show", model, "--config", str(config_file)], "--config applies to an architecture"),
        "--prompt-ids not numbers": (["run", model, "--prompt-ids", "1,x"], "expected comma-separated integers"),
        "--prompt-ids empty": (["run", model, "--prompt-ids", ""], "expected comma-separated integers"),
        "--prompt-ids out of vocabulary": (["run", model, "--prompt-ids", "1,999"], "token id 999 is outside"),
        "no weights": (["run", str(no_weights), "--prompt-ids", "1"], "has no weights"),
        "bad top-p": (["run", model, "--prompt-ids", "1", "--sample", "top-p", "--top-p", "1.5"], "top-p must be"),
        "negative max tokens": (["run", model, "--prompt-ids", "1", "--max-new-tokens", "-1"], "--max-new-tokens"),
        "existing output": (["import", "llama", "-o", model], "exists (use --force to overwrite)"),
        "output not .llmc": (["import", "llama", "-o", str(tmp_path / "m.txt")], "must end in .llmc"),
        "temperature nan": (["run", model, "--prompt-ids", "1", "--sample", "top-k", "--temperature", "nan"],
                            "temperature must be a positive finite number"),
        "context 0": (["compile", model, "--context", "0", "-o", str(tmp_path / "p")], "--context must be at least 1"),
        "weights of another model": (["show", str(swapped)], "belongs to another .llmc"),
        "architecture without --config": (["show", "llama"], "random weights need the model's sizes (--config FILE)"),
    }


CASES = ["missing file", "corrupt config.json", "corrupt .llmc", "unknown architecture name", "unsupported architecture",
         "corrupt --config", "missing --config", "--config on a file", "--prompt-ids not numbers", "--prompt-ids empty",
         "--prompt-ids out of vocabulary", "no weights", "bad top-p", "negative max tokens", "existing output",
         "output not .llmc", "temperature nan", "context 0", "weights of another model", "architecture without --config"]


@pytest.mark.parametrize("case", CASES)
def test_user_errors_are_one_line(case: str, bad_inputs: dict[str, tuple[list[str], str]],
                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert sorted(bad_inputs) == sorted(CASES)
    args, fragment = bad_inputs[case]
    assert main(args) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("llmc: error: ") and captured.err.count("\n") == 1, captured.err
    assert fragment in captured.err
    assert "Traceback" not in captured.err
    assert captured.out == ""


def test_debug_shows_the_traceback(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.llmc")
    for args in (["--debug", "show", missing], ["show", missing, "--debug"]):
        assert main(args) == 2
        err = capsys.readouterr().err
        assert err.startswith("Traceback") and err.splitlines()[-1].startswith("llmc: error: ")


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], llmc_file: Path) -> None:
    for args in ([], ["frobnicate"], ["run", str(llmc_file)], ["run", str(llmc_file), "--prompt", "a", "--prompt-ids", "1"],
                 ["run", str(llmc_file), "--prompt-ids", "1", "--sample", "beam"]):
        with pytest.raises(SystemExit) as exit_:
            main(args)
        assert exit_.value.code == 2
        assert "Traceback" not in capsys.readouterr().err


def test_interrupt_exits_130(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(common, "load", interrupted)
    assert main(["show", "llama"]) == 130
    assert capsys.readouterr().err == "llmc: interrupted\n"


def test_run_from_source_in_a_real_process_matches_the_llmc(hf_dir: Path, llmc_file: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """``python -m llmc.cli run`` on the Hugging Face directory gives the tokens of the imported
    .llmc; stdout holds only the JSON and stderr stays empty (library warnings, logs and
    progress bars hidden)."""
    args = ["--prompt", PROMPT, "--max-new-tokens", "6", "--json"]
    done = subprocess.run([sys.executable, "-m", "llmc.cli", "run", str(hf_dir), *args],
                          capture_output=True, text=True, timeout=300)
    assert (done.returncode, done.stderr) == (0, "")
    from_source = json.loads(done.stdout)
    assert from_source == _run_json(capsys, str(llmc_file), *args[:-1])
    assert len(from_source["tokens"]) >= 1


# ---------------------------------------------------------------------------------------------
# the bundled model
# ---------------------------------------------------------------------------------------------

needs_tiny = pytest.mark.skipif(not (BUNDLED["llmc-tiny"] / "model.safetensors").exists(),
                                reason="llmc-tiny is not trained yet (no llmc/assets/llmc-tiny/model.safetensors)")


@needs_tiny
def test_llmc_tiny_show_and_run(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", "llmc-tiny", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["name"] == "llmc-tiny" and report["has_weights"] is True
    assert [g["index"] for g in report["groups"] if g["kind"] == "layer"] == list(range(4))
    result = _run_json(capsys, "llmc-tiny", "--prompt", "The interpreter", "--max-new-tokens", "8")
    assert 1 <= len(result["tokens"]) <= 8 and isinstance(result["text"], str)



def test_an_existing_folder_wins_over_an_architecture_name(hf_dir: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """``./llama`` is the folder there, not a default-size random Llama (which would not fit in memory)."""
    assert main(["show", str(hf_dir), "--json"]) == 0
    expected = json.loads(capsys.readouterr().out)["params"]
    shutil.copytree(hf_dir, tmp_path / "llama")
    monkeypatch.chdir(tmp_path)
    assert main(["show", "llama", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["params"] == expected
