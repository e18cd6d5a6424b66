"""The bundled model split over two cards (pipeline and tensor) through the deployed runtime: ``llmc run
CLUSTER --device sim`` and a deployed folder's run.py give the cards' ISSs' greedy tokens; the
deployed folder holds each card's design; without the cards, ``--device pynq`` stops with one line;
each card's io buffer holds its mail."""

from __future__ import annotations

import importlib.util
import json
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
from deploy_support import PROMPT, ids_text, one_error_line, run_py, snapshot
from zoo import shared_folder

from llmc.backends.fpga.isa import INSTR_BYTES
from llmc.cli import main
from llmc.deploy.bundle import XCLBIN, project_deployment
from llmc.deploy.layout import io_buffer_bytes, io_span, plan_buffers
from llmc.errors import LlmcError
from llmc.generate.loop import generate
from llmc.sim.cluster import ClusterImage, ClusterIssDevice

CONTEXT = 256
NEW_TOKENS = 6
SPLITS = ("pipeline", "tensor")


@pytest.fixture(scope="module")
def cluster(tiny_clusters: Mapping[str, Path]) -> Callable[[str], Path]:
    """The bundled model compiled for 2 U280s, split ``parallel`` ways (once per test run)."""
    return tiny_clusters.__getitem__


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory, cluster: Callable[[str], Path]) -> Callable[[str], Path]:
    """``llmc deploy`` of a cluster."""
    def deploy(parallel: str) -> Path:
        return shared_folder(tmp_path_factory, f"cluster/{parallel}-deployed",
                             lambda out: _check(main(["deploy", str(cluster(parallel)), "-o", str(out)])))

    return deploy


def _check(code: int) -> None:
    assert code == 0


@pytest.mark.parametrize("parallel", SPLITS)
def test_cluster_runs_the_cards_iss_tokens(cluster, deployed, parallel, capsys):
    folder, out = cluster(parallel), deployed(parallel)
    capsys.readouterr()  # what compiling and deploying printed
    eos = project_deployment(folder).eos_token_id
    want = generate(ClusterIssDevice(ClusterImage.load(folder)), PROMPT, NEW_TOKENS, stop_ids=[eos]).tokens
    args = ["--device", "sim", "--prompt-ids", ids_text(PROMPT), "--max-new-tokens", str(NEW_TOKENS), "--json"]

    assert main(["run", str(folder), *args]) == 0
    in_place = json.loads(capsys.readouterr().out)
    assert in_place["tokens"] == want and in_place["name"] == folder.name and in_place["timing"] == "modelled"
    assert len(in_place["seconds"]) == len(want) and all(s > 0 for s in in_place["seconds"])

    before = snapshot(out)
    result = run_py(out, *args)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == in_place
    assert snapshot(out) == before


def test_deployed_cluster_folder(cluster, deployed):
    project, out = cluster("pipeline"), deployed("pipeline")
    manifest = json.loads((out / "deploy.json").read_text())
    assert manifest["parallel"] == "pipeline" and manifest["tokenizer"] == "tokenizer.json"
    assert manifest["max_context"] == CONTEXT and manifest["vocab"] == 1024
    image = ClusterImage.load(out)
    assert [c["folder"] for c in manifest["cards"]] == ["card0", "card1"]
    assert [c["program_digest"] for c in manifest["cards"]] == [card.program_digest for card in image.cards]
    assert all(c["xclbin"] is None for c in manifest["cards"])
    assert (out / "cluster.json").read_bytes() == (project / "cluster.json").read_bytes()
    for card in ("card0", "card1"):
        assert (out / card / "weights.bin").read_bytes() == (project / card / "weights.bin").read_bytes()
        assert "target" in json.loads((out / card / "design.json").read_text())
    readme = (out / "README.md").read_text()
    assert "## How the cards are driven" in readme and "Alveo card N + i" in readme
    assert "### Card 1 (`card1/`)" in readme and "`llmc_accel_1`" in readme
    shipped = {p.relative_to(out).as_posix() for p in (out / "llmc").rglob("*.py")}
    assert {"llmc/sim/cluster.py", "llmc/deploy/pynq_cluster.py", "llmc/backends/fpga/links.py"} <= shipped
    assert not any(p.startswith(("llmc/compiler", "llmc/backends/tvm", "llmc/cli")) for p in shipped)


def test_pynq_without_the_cards(cluster, deployed, tmp_path, capsys):
    """Up to the hardware boundary: each card's xclbin, then pynq or the cards."""
    out = deployed("pipeline")
    capsys.readouterr()
    one_error_line(run_py(out, "--device", "pynq", "--prompt-ids", "1,2"), "card 0: no xclbin deployed")
    one_error_line(run_py(out, "--device", "pynq", "--prompt-ids", "1,2", "--xclbin", str(out / "run.py")),
                   "--xclbin applies to one-card designs")

    project = tmp_path / "cluster"
    shutil.copytree(cluster("pipeline"), project)
    (project / "card0" / XCLBIN).write_bytes(b"xclbin2\0")
    assert main(["run", str(project), "--device", "pynq", "--prompt-ids", "1,2"]) == 2
    assert "card 1: no xclbin deployed" in capsys.readouterr().err
    (project / "card1" / XCLBIN).write_bytes(b"xclbin2\0")
    assert main(["deploy", str(project), "-o", str(tmp_path / "out"), "--xclbin", str(project / "card0" / XCLBIN)]) == 2
    assert "--xclbin applies to one-card projects" in capsys.readouterr().err
    assert main(["deploy", str(project), "-o", str(tmp_path / "out")]) == 0
    capsys.readouterr()
    assert (tmp_path / "out" / "card1" / XCLBIN).read_bytes() == b"xclbin2\0"
    result = run_py(tmp_path / "out", "--device", "pynq", "--prompt-ids", "1,2")
    one_error_line(result, "pynq: not installed" if importlib.util.find_spec("pynq") is None else "pynq")


@pytest.mark.parametrize("parallel", SPLITS)
def test_io_buffer_holds_each_cards_mail(cluster, parallel):
    """What a card's io buffer must hold: ids, positions and logits, then the mail region every
    transfer of the largest chunk lands in; nothing past it."""
    image = ClusterImage.load(cluster(parallel), weights=False)
    rows = max(image.cards[0].config.buckets)
    for c, card in enumerate(image.cards):
        size = io_buffer_bytes(card.io)
        assert size == card.io["io_bytes"] + card.io["mail_bytes"] > card.io["io_bytes"]
        programs = {b: len(p) * INSTR_BYTES for b, p in card.programs.items()}
        io = plan_buffers(card.config, programs, [1] * len(card.config.weight_channels), card.kv_bytes, size)[-1]
        assert io.name == "io" and io.size == size
        for t in image.transfers:
            if c == t.sender or c in t.receivers:
                io_span(card.io, card.io["mail_offset"] + t.offset, rows * t.cols * 4)
        assert io_span(card.io, size - 8, 8) == slice(size - 8, size)
        with pytest.raises(LlmcError, match="outside the"):
            io_span(card.io, size - 8, 12)
