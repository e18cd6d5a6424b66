"""Seeded fuzzing of every text llmc reads: mutants of IR text, pass pipelines, board YAML and model
configs. Each is refused with llmc's own error types (one line at the command line) or, when accepted,
runs; no other exception escapes. Bounded: 800 IR, 2,000 pipeline, 400 board and 60 config mutants,
about 12 seconds on the 2-core machine (parsing dominates: 10 ms per IR mutant)."""

from __future__ import annotations

import random
import re
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from zoo import FPGA_SMALL, LLAMA

import llmc
import llmc.compiler.passes  # noqa: F401  (registers the passes)
from llmc.backends.fpga.target import TARGETS_DIR, load_target
from llmc.compiler.frontend import hf
from llmc.compiler.pipeline import parse_pipeline
from llmc.errors import LlmcError
from llmc.generate.interpreter import InterpreterDevice
from llmc.ir.interpreter import InterpreterError
from llmc.ir.parser import ParseError, parse_module
from llmc.ir.printer import print_module
from llmc.ir.verify import VerifyError, verify_module

SEED = 20261207
EXPECTED = (LlmcError, ParseError, VerifyError, InterpreterError)
TOKEN = re.compile(r"%[A-Za-z0-9_.]+|@[A-Za-z0-9_.]+|[A-Za-z_][A-Za-z0-9_]*|-?\d+(?:\.\d+)?|\S")
NOISE = ["\x00", "\n", "{", "}", "<", ">", '"', "\\", "é", "%", "@", ":", ",", "=", "x", "-1", "1e999", "nan"]


def mutants(text: str, count: int, rng: random.Random) -> Iterator[str]:
    """``count`` variants of ``text``, each one random edit of its characters, lines or tokens."""
    lines = text.splitlines(keepends=True)
    tokens = TOKEN.findall(text)
    for _ in range(count):
        kind = rng.randrange(7)
        if kind == 0:  # delete a span
            i = rng.randrange(len(text))
            yield text[:i] + text[i + rng.randint(1, 20):]
        elif kind == 1:  # insert noise
            i = rng.randrange(len(text))
            yield text[:i] + rng.choice(NOISE) + text[i:]
        elif kind == 2:  # drop a line
            i = rng.randrange(len(lines))
            yield "".join(lines[:i] + lines[i + 1:])
        elif kind == 3:  # duplicate a line
            i = rng.randrange(len(lines))
            yield "".join(lines[:i + 1] + lines[i:])
        elif kind == 4:  # swap two lines
            a, b = rng.randrange(len(lines)), rng.randrange(len(lines))
            swapped = list(lines)
            swapped[a], swapped[b] = swapped[b], swapped[a]
            yield "".join(swapped)
        elif kind == 5:  # replace one token by another of the text
            matches = list(TOKEN.finditer(text))
            m = rng.choice(matches)
            yield text[:m.start()] + rng.choice(tokens) + text[m.end():]
        else:  # truncate
            yield text[:rng.randrange(len(text))]


@pytest.fixture(scope="module")
def small_model() -> llmc.Model:
    return llmc.load("llama", config=FPGA_SMALL)


def test_ir_mutants_are_refused_or_run(small_model: llmc.Model) -> None:
    rng = random.Random(SEED)
    original = small_model.module
    text = print_module(original)
    accepted = ran = 0
    for mutant in mutants(text, 800, rng):
        try:
            module = parse_module(mutant)
            verify_module(module)
        except (ParseError, VerifyError):
            continue
        except Exception as e:  # noqa: BLE001  (what the test looks for)
            pytest.fail(f"{type(e).__name__} from the parser or verifier: {e}\n--- mutant ---\n{mutant[:2000]}")
        accepted += 1
        for name, param in module.params.items():
            source = original.params.get(name)
            if source is not None and source.type == param.type:
                param.data = source.data
        if not module.has_weights:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                device = InterpreterDevice(module)
                device.prefill([1, 2, 3])
                device.decode(4)
            ran += 1
        except EXPECTED:
            pass
        except Exception as e:  # noqa: BLE001
            pytest.fail(f"{type(e).__name__} running a verified mutant: {e}\n--- mutant ---\n{mutant[:2000]}")
    assert accepted > 0 and ran > 0  # the mutations do reach the interpreter


def test_pipeline_mutants_are_refused_or_parsed() -> None:
    rng = random.Random(SEED)
    text = ("smoothquant{alpha=0.5},sparsify{pattern=2:4,method=wanda},quantize{bits=4,group=128,method=gptq},"
            "mixed-precision{budget=3.5,group=64},kv-quant{bits=8},lut-mpgemm{table_bits=8}")
    for mutant in mutants(text, 2000, rng):
        try:
            parse_pipeline(mutant)
        except LlmcError:
            pass


def test_board_mutants_are_refused_or_loaded(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    path = tmp_path / "board.yaml"
    for mutant in mutants((TARGETS_DIR / "u280.yaml").read_text(), 400, rng):
        path.write_bytes(mutant.encode("utf-8", errors="surrogatepass"))
        try:
            target = load_target(str(path))
        except LlmcError:
            continue
        assert np.isfinite(target.memory.bandwidth_gbs) and target.memory.channels >= 1


VALUES = [0, -1, 1.5, "x", "64", None, [], {}, True, 10**12, float("nan")]


def test_config_mutants_are_refused_or_built() -> None:
    rng = random.Random(SEED)
    for _ in range(60):
        config = {"model_type": "llama", **LLAMA}
        key = rng.choice(sorted(config))
        if rng.random() < 0.2:
            del config[key]
        else:
            config[key] = rng.choice(VALUES)
        try:
            hf.build_model(hf.config_from_dict(config, "config.json"), meta=True)
        except LlmcError:
            pass


def test_the_verifier_checks_the_step_contract(small_model: llmc.Model) -> None:
    text = print_module(small_model.module)
    for old, new, message in [("%v_0", "%w_0", "func @(prefill|decode): outputs are"),
                              ("layers = 1", "layers = 0", "attribute layers must be a positive integer"),
                              ("%position_ids", "%positions", "func @(prefill|decode): inputs are")]:
        assert old in text
        with pytest.raises(VerifyError, match=message):
            verify_module(parse_module(text.replace(old, new)))
    unnamed = parse_module(text.replace("layers = 1", "layerz = 1"))  # programs of no declared depth
    verify_module(unnamed)
    with pytest.raises(LlmcError, match="has no attribute layers: not a causal LM"):
        InterpreterDevice(unnamed)
