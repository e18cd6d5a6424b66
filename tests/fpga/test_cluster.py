"""Models split over several cards: the split modules against the unsplit program, the cluster's
compile (segments, transfers, mail), the cards' ISSs against the cluster interpreter, the link
model, the command line and the refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from zoo import FAMILIES

import llmc
from llmc.backends.fpga.cluster import compile_cluster, link_schedule
from llmc.backends.fpga.links import CLUSTER_FILE, LINKS
from llmc.backends.fpga.lower import lower
from llmc.backends.fpga.split import split
from llmc.cli import main as cli
from llmc.errors import LlmcError
from llmc.generate.step import ClusterStepDevice, StepDevice
from llmc.io import load_module
from llmc.ir.verify import verify_module
from llmc.sim.cluster import ClusterImage, ClusterIssDevice
from llmc.sim.iss import IssDevice
from llmc.sim.ladder import verify_cluster

CONTEXT = 256
PROMPT = [1, 5, 9, 33, 70, 2, 100, 7]


@pytest.fixture(scope="module")
def bundled() -> llmc.Model:
    return llmc.load("llmc-tiny")


@pytest.fixture(scope="module")
def lowered(bundled: llmc.Model) -> llmc.ir.graph.Module:
    return lower(bundled.module, CONTEXT)


@pytest.fixture(scope="module")
def clusters(tiny_clusters: dict[str, Path], engine_projects: object) -> dict[str, Path]:
    """The bundled model on 2 U280s, split each way, and on one (the reference)."""
    return {**tiny_clusters, "one": engine_projects["int8"]}  # type: ignore[index]


def greedy(device: object, prompt: list[int], steps: int) -> list[int]:
    logits = device.run(prompt)  # type: ignore[attr-defined]
    tokens = []
    for _ in range(steps):
        tokens.append(int(np.argmax(logits[-1])))
        logits = device.run([tokens[-1]])  # type: ignore[attr-defined]
    return tokens


@pytest.mark.parametrize("cards", [2, 3, 4])
def test_pipeline_split_is_the_unsplit_program(lowered: llmc.ir.graph.Module, cards: int) -> None:
    """Layers cut at block boundaries: every card verifies and the cluster's logits are the one-card
    program's, bit for bit, over a prompt and decode steps."""
    modules = split(lowered, cards, "pipeline")
    for m in modules:
        verify_module(m)
    assert sum(m.attrs["card"] == c for c, m in enumerate(modules)) == cards
    whole, parts = StepDevice(lowered), ClusterStepDevice(modules)
    for chunk in (PROMPT, [11], [12]):
        assert np.array_equal(whole.run(chunk), parts.run(chunk))


def test_tensor_split_shares_heads_and_columns(lowered: llmc.ir.graph.Module) -> None:
    """Each card holds half the heads, half the MLP rows and its half of the KV cache; the partial
    sums make logits close to the one-card program's (per-card activation scales differ)."""
    modules = split(lowered, 2, "tensor")
    for m in modules:
        verify_module(m)
    step = modules[1].functions["step"]
    attention = next(n for n in step.nodes if n.op == "hw_attention")
    assert (attention.attrs["heads"], attention.attrs["kv_heads"]) == (2, 1)
    assert next(v for v in step.inputs if v.name == "past_k_0_codes").type.shape[1].value == 64
    assert not any(n.op == "hw_embed" for n in step.nodes) and "logits" not in {v.name for v in step.outputs}
    gate = modules[1].params["model.layers.0.mlp.gate_proj.weight.hw_codes"]
    assert np.array_equal(gate.data, lowered.params["model.layers.0.mlp.gate_proj.weight.hw_codes"].data[384:])
    want, got = StepDevice(lowered).run(PROMPT), ClusterStepDevice(modules).run(PROMPT)
    assert np.mean(want.argmax(-1) == got.argmax(-1)) >= 0.75
    assert np.abs(want - got).max() < 0.05 * np.abs(want).max()


@pytest.mark.parametrize(("family", "cards", "heads"), [("llama", 2, [(2, 1), (4, 2)]), ("llama", 3, [(2, 1)] * 3),
                                                      ("qwen3", 2, [(2, 1)] * 2), ("opt", 2, [(2, 2)] * 2)])
def test_tensor_split_families_and_uneven_heads(family: str, cards: int, heads: list[tuple[int, int]]) -> None:
    """Uneven splits deal whole KV-head groups and whole scale groups, the extra ones to the last cards
    (6 heads and 3 KV heads over 2 cards: 2 + 4); QK-norm (Qwen3), LayerNorm and biases (OPT) split too. Each card's module
    verifies and the cluster predicts the one-card program's tokens on the prompt."""
    from llmc.compiler.pipeline import PassContext, parse_pipeline, run_pipeline

    config = dict(FAMILIES[family])
    if family == "llama":
        config.update(hidden_size=96, intermediate_size=320, num_attention_heads=6, num_key_value_heads=3, head_dim=16)
    module = llmc.load(family, config=config).module
    if family == "llama":
        module = run_pipeline(module, parse_pipeline("quantize{bits=4,group=32}"), PassContext())
    hw = lower(module, 64)
    modules = split(hw, cards, "tensor")
    for m in modules:
        verify_module(m)
    got = [next(n.attrs for n in m.functions["step"].nodes if n.op == "hw_attention") for m in modules]
    assert [(a["heads"], a["kv_heads"]) for a in got] == heads
    want, have = StepDevice(hw).run(PROMPT[:5]), ClusterStepDevice(modules).run(PROMPT[:5])
    assert np.mean(want.argmax(-1) == have.argmax(-1)) >= 0.6
    assert np.abs(want - have).max() < 0.05 * np.abs(want).max()


def test_link_schedule(lowered: llmc.ir.graph.Module) -> None:
    """Pipeline: one segment per card, one transfer per cut. Tensor: the embedded rows, then two
    partial sums per block, each sent to every other card (but card 0's last, which card 1 does not
    need: it does not compute the logits); mail regions are reused."""
    links, transfers, segments = link_schedule(split(lowered, 3, "pipeline"), 64)
    assert segments == 3 and [(t.sender, t.receivers, t.segment) for t in transfers] == [(0, (1,), 0), (1, (2,), 1)]
    links, transfers, segments = link_schedule(split(lowered, 2, "tensor"), 64)
    assert len(transfers) == 1 + 4 * 2 * 2 - 1 and segments == 1 + 4 * 2 + 1
    assert {t.receivers for t in transfers[1:]} == {(0,), (1,)}
    assert links[0].mail_bytes < len(transfers) * 64 * 256 * 4  # regions reused across segments


@pytest.mark.parametrize("parallel", ["pipeline", "tensor"])
def test_cluster_iss_is_the_cluster_interpreter(clusters: dict[str, Path], parallel: str) -> None:
    """The cards' ISSs, run segment by segment with the host moving what they send, give the
    cluster interpreter's logits bit for bit (llmc verify's cluster ladder)."""
    results = verify_cluster(clusters[parallel], PROMPT, 3, levels=("interpreter", "iss"))
    assert [r.level for r in results] == ["interpreter", "iss"]
    assert results[1].compared > 0 and results[1].mismatches == 0


CLUSTER_FAMILIES = ["gpt2", "opt", "qwen2", "gemma2", "gemma3_text", "phi3", "gpt_neox", "olmoe", "mixtral", "qwen3_moe"]
MOE = {"olmoe", "mixtral", "qwen3_moe"}


@pytest.mark.parametrize(("family", "parallel"), [
    pytest.param(f, p, marks=[] if (f, p) in {("gpt2", "tensor"), ("olmoe", "pipeline")} else [pytest.mark.slow])
    for f in CLUSTER_FAMILIES for p in ("pipeline", "tensor") if not (f in MOE and p == "tensor")])
def test_family_on_two_cards(family: str, parallel: str, tmp_path: Path) -> None:
    """Every family the accelerator runs compiles for two cards and its cards' ISSs are bit-exact with
    the cluster interpreter (GPT-2's learned positions and LayerNorm, Gemma's soft-capping and sliding
    windows, mixtures of experts on a pipeline)."""
    module = llmc.load(family, config=FAMILIES[family]).module
    compile_cluster(module, "u280", tmp_path / "c", 2, parallel, max_context=64)
    _, iss = verify_cluster(tmp_path / "c", [1, 5, 9, 3], 3, levels=("interpreter", "iss"))
    assert iss.compared > 0 and iss.mismatches == 0


def test_pipeline_cluster_tokens_are_one_cards(clusters: dict[str, Path]) -> None:
    """The bundled model on two simulated cards generates the tokens of one card and of the interpreter."""
    one = greedy(IssDevice(clusters["one"]), PROMPT, 12)
    assert greedy(ClusterIssDevice(ClusterImage.load(clusters["pipeline"])), PROMPT, 12) == one
    assert greedy(StepDevice(load_module(clusters["one"] / "model.llmc")), PROMPT, 12) == one


def test_cluster_programs_and_manifest(clusters: dict[str, Path]) -> None:
    """Every card's program has the same number of segments; SEND/RECV address the mail region after
    io; cluster.json states the transfers and the modelled run of each link."""
    image = ClusterImage.load(clusters["tensor"])
    for card in image.cards:
        for program in card.programs.values():
            assert sum(i.op == "SYNC" for i in program) == image.segments - 1
            mail = [int(i.fields["io_off"]) for i in program if i.op in ("SEND", "RECV")]
            assert mail and min(mail) >= card.io["mail_offset"]
            assert max(mail) < card.io["mail_offset"] + card.io["mail_bytes"]
    manifest = json.loads((clusters["tensor"] / CLUSTER_FILE).read_text())
    runs = manifest["modelled"]
    assert runs["host"]["generated"] and not runs["qsfp"]["generated"]
    assert runs["qsfp"]["tokens_per_s"] > runs["host"]["tokens_per_s"]
    assert 0 < runs["host"]["link_share"] < 1 and manifest["parallel"] == "tensor"


def test_a_changed_cluster_file_is_named(clusters: dict[str, Path], tmp_path: Path) -> None:
    """Readers check the cluster folder's manifest: an edited cluster.json, or a card's program from
    another compile, is refused with the file named."""
    import shutil

    folder = tmp_path / "c"
    shutil.copytree(clusters["pipeline"], folder)
    manifest = json.loads((folder / CLUSTER_FILE).read_text())
    (folder / CLUSTER_FILE).write_text(json.dumps({**manifest, "segments": 1}))
    with pytest.raises(LlmcError, match=CLUSTER_FILE):
        ClusterImage.load(folder)
    shutil.copytree(clusters["pipeline"], folder, dirs_exist_ok=True)
    shutil.copy(clusters["tensor"] / "card1" / "program.bin", folder / "card1" / "program.bin")
    with pytest.raises(LlmcError, match="card1/program.bin"):
        ClusterImage.load(folder)


def test_link_model_figures() -> None:
    """The host link: a kernel call per segment plus a PCIe copy out of the sender and into each
    receiver; the ring: hops to the farthest receiver plus the bytes once."""
    host, ring = LINKS["host"], LINKS["qsfp"]
    nbytes = 4096
    assert host.transfer_seconds(nbytes, 0, (1, 2), 3) == pytest.approx(3 * (19e-6 + nbytes / 12.47e9))
    assert ring.transfer_seconds(nbytes, 2, (0, 1), 3) == pytest.approx(2 * 55 / 402.8e6 + nbytes / (100e9 * 64 / 66 / 8))
    assert host.transfer_seconds(nbytes, 0, (), 2) == 0.0


def test_refusals(lowered: llmc.ir.graph.Module) -> None:
    with pytest.raises(LlmcError, match="at least 2 cards"):
        split(lowered, 1, "pipeline")
    with pytest.raises(LlmcError, match="unknown split"):
        split(lowered, 2, "diagonal")
    with pytest.raises(LlmcError, match="256 columns in units of 128 do not split over 3 cards"):
        split(lowered, 3, "tensor")
    with pytest.raises(LlmcError, match="9 places to cut .* cannot be split over 11 cards"):
        split(lowered, 11, "pipeline")
    moe = lower(llmc.load("olmoe", config=FAMILIES["olmoe"]).module, 64)
    with pytest.raises(LlmcError, match="mixture-of-experts .* --parallel pipeline"):
        split(moe, 2, "tensor")
    assert len(split(moe, 2, "pipeline")) == 2


def test_cli(tmp_path: Path, tiny_llmc: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """llmc compile --cards writes the folder; simulate --timing-only and --prompt-ids run it; a
    second compile refuses to overwrite; --cards 0 is a one-line error."""
    out = tmp_path / "cluster"
    args = ["compile", str(tiny_llmc), "--cards", "2", "--context", "128", "--eval-windows", "0", "-o", str(out)]
    assert cli(args) == 0
    assert "2 x u280, pipeline split" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["card0", "card1", CLUSTER_FILE, "llmc-manifest.json"]
    assert cli(["simulate", str(out), "--timing-only", "--json"]) == 0
    modelled = json.loads(capsys.readouterr().out)["modelled"]
    assert set(modelled) == {"host", "qsfp"}
    assert cli(["simulate", str(out), "--prompt-ids", "1,5,9", "--max-new-tokens", "3", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["tokens"]) == 3
    assert cli(args) == 2
    assert "exists" in capsys.readouterr().err
    assert cli([*args[:3], "0", *args[4:-1], str(tmp_path / "none")]) == 2
    assert "--cards must be at least 1" in capsys.readouterr().err
