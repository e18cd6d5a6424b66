"""``llmc sweep``: a 16-point sweep of the bundled model on a local Ray (outputs consistent with each
other and with the timing model run directly), resuming from the cache, the same sweep on a
two-node Ray cluster on localhost, and one-line refusals of bad specs."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from xml.etree import ElementTree

import pytest
from zoo import shared_folder

pytest.importorskip("ray")

from llmc.cli import main  # noqa: E402
from llmc.sweep.point import TIMING_FIELDS  # noqa: E402

W4 = "quantize{bits=4,group=128}"
# 2 recipes x 2 boards x 2 contexts x 2 engine settings; max_rows 4096 needs more URAM than a board has.
SPEC = f"""
model: {{model}}
recipes: ["", "{W4}"]
boards: [u280, u55c]
context: [64, 128]
engines: [{{}}, {{max_rows: 4096}}]
eval_windows: 1
prefill: 16
decode: 32
"""
OUTPUTS = ("points.json", "points.csv", "pareto.json", "report.md", "perplexity_vs_tokens.svg", "tokens_vs_dsp.svg",
           "tokens_vs_lut.svg", "sweep.json", "llmc-manifest.json")
RAY = Path(sys.executable).with_name("ray")


def sweep(*args: str | Path) -> tuple[int, dict, str]:
    """``llmc sweep ARGS --json`` in this process: exit code, the JSON summary, stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["sweep", *map(str, args), "--json"])
    return code, json.loads(out.getvalue()) if code == 0 else {}, err.getvalue()


def results(folder: Path) -> list[dict]:
    """The points of a sweep folder without the fields that say how and where each ran."""
    return [{k: v for k, v in p.items() if k not in TIMING_FIELDS} for p in json.loads((folder / "points.json").read_text())]


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory, tiny_llmc: Path) -> Path:
    path = tmp_path_factory.mktemp("spec") / "sweep.yaml"
    path.write_text(SPEC.replace("{model}", str(tiny_llmc)))
    return path


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory, spec: Path) -> tuple[Path, dict, float]:
    """The sweep on a local Ray of 2 CPUs, run once for all xdist workers: its folder, summary and wall time."""

    def make(folder: Path) -> None:
        folder.mkdir(parents=True)
        start = time.perf_counter()
        code, summary, err = sweep(spec, "-o", folder / "sweep")
        assert code == 0, err
        (folder / "summary.json").write_text(json.dumps({**summary, "wall_s": time.perf_counter() - start}))

    folder = shared_folder(tmp_path_factory, "sweep-local", make)
    summary = json.loads((folder / "summary.json").read_text())
    return folder / "sweep", summary, summary.pop("wall_s")


def test_sweep_writes_consistent_outputs(local: tuple[Path, dict, float]) -> None:
    out, summary, seconds = local
    print(f"local sweep: {seconds:.1f} s")
    assert (summary["points"], summary["computed"], summary["cached"], summary["failed"]) == (16, 16, 0, 8)
    assert all((out / name).is_file() for name in OUTPUTS)
    points = json.loads((out / "points.json").read_text())
    ok = [p for p in points if p["status"] == "ok"]
    assert [p["engine"] for p in ok] == [{}] * 8
    for p in points:
        if p["status"] != "ok":
            assert p["engine"] == {"max_rows": 4096} and "no accelerator configuration fits" in p["error"]
    assert len({p["key"] for p in points}) == 16
    assert all(p["perplexity"] > 1 and p["eval_tokens"] == p["context"] - 1 for p in ok)
    assert {p["recipe"]: p["perplexity"] for p in ok if p["context"] == 64}.keys() == {"", W4}
    assert all(p["decode_tokens_per_s"] > 0 and 0 < p["resource_fraction"] <= 1 for p in ok)

    with open(out / "points.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["key"] for r in rows] == [p["key"] for p in points]
    assert all(float(r["decode_tokens_per_s"]) == p["decode_tokens_per_s"] for r, p in zip(rows, points) if p in ok)

    pareto = json.loads((out / "pareto.json").read_text())
    assert [a["field"] for a in pareto["axes"]] == ["perplexity", "decode_tokens_per_s", "resource_fraction"]
    front = {p["key"] for p in pareto["points"]}
    assert front and front <= {p["key"] for p in ok} and summary["pareto"] == [p["key"] for p in pareto["points"]]

    def worse(a: dict, b: dict) -> bool:  # b dominates a
        pairs = [(a["perplexity"], b["perplexity"]), (-a["decode_tokens_per_s"], -b["decode_tokens_per_s"]),
                 (a["resource_fraction"], b["resource_fraction"])]
        return all(y <= x for x, y in pairs) and any(y < x for x, y in pairs)

    for p in ok:
        assert (p["key"] in front) == (not any(worse(p, q) for q in ok))
    assert {r["key"] for r in rows if r["pareto"] == "True"} == front

    report = (out / "report.md").read_text()
    assert sum(line.startswith("| ") for line in report.splitlines()) == 1 + 16  # header and one row per point
    assert report.count("no accelerator configuration fits") == 8
    for name in OUTPUTS[4:7]:
        assert f"]({name})" in report
        svg = ElementTree.parse(out / name).getroot()
        highlighted = [c for c in svg.iter("{http://www.w3.org/2000/svg}circle") if c.get("r") == "5"]
        assert len(highlighted) == len(front) + 1  # and the legend's


def test_tokens_per_s_is_the_timing_model_of_the_compiled_project(local: tuple[Path, dict, float],
                                                                   tiny_llmc: Path, tmp_path: Path) -> None:
    """One point against ``llmc compile`` + the timing model on the project, as ``simulate --timing-only``."""
    import llmc
    from llmc.backends.fpga.flow import compile_project
    from llmc.backends.fpga.timing import TimingModel
    from llmc.sim.image import ProjectImage
    from llmc.sim.perf import model_run
    from llmc.sweep.point import apply_recipe

    point = next(p for p in json.loads((local[0] / "points.json").read_text())
                 if (p["recipe"], p["board"], p["context"], p["engine"]) == (W4, "u55c", 128, {}))
    model = llmc.load(tiny_llmc)
    d = compile_project(apply_recipe(model.module, model.tokenizer_json, W4), "u55c", tmp_path / "p", max_context=128)
    image = ProjectImage.load(tmp_path / "p", weights=False)
    figures = model_run(TimingModel.for_image(image), image.programs, 16, 32)
    assert point["decode_tokens_per_s"] == figures.decode_tokens_per_s
    assert point["prefill_ms"] == figures.prefill_s * 1e3
    assert point["hbm_bytes_per_token"] == figures.hbm_bytes
    assert point["resources"] == pytest.approx(d.utilisation.fractions, rel=1e-12)


def test_a_second_run_computes_nothing(local: tuple[Path, dict, float], spec: Path) -> None:
    out = local[0]
    before = {name: (out / name).read_bytes() for name in OUTPUTS}
    code, summary, err = sweep(spec, "-o", out)
    assert code == 0, err
    assert (summary["computed"], summary["cached"]) == (0, 16)
    assert {name: (out / name).read_bytes() for name in OUTPUTS} == before


def test_another_spec_is_refused_in_the_folder(local: tuple[Path, dict, float], spec: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.yaml"
    other.write_text(spec.read_text().replace("eval_windows: 1", "eval_windows: 0"))
    code, _, err = sweep(other, "-o", local[0])
    assert code == 2 and err.count("\n") == 1 and "holds a sweep of another spec (use --force" in err
    stranger = tmp_path / "stranger"
    (stranger / "notes.txt").parent.mkdir()
    (stranger / "notes.txt").write_text("mine")
    code, _, err = sweep(spec, "-o", stranger, "--force")
    assert code == 2 and "not written by llmc" in err and (stranger / "notes.txt").read_text() == "mine"


@contextlib.contextmanager
def ray_cluster(nodes: int) -> Iterator[str]:
    """A Ray cluster of ``nodes`` one-CPU nodes on localhost, each a ``ray start --block`` in its own
    process group; the groups are ended (by id) when the block ends. Yields the head's address."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"127.0.0.1:{port}"
    temp = tempfile.mkdtemp(prefix="llmc-ray", dir="/tmp")  # short: Ray's socket paths live below it
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    common = ["--num-cpus=1", "--block", "--disable-usage-stats"]
    started: list[subprocess.Popen] = []
    try:
        for i in range(nodes):
            where = ["--head", f"--port={port}", "--include-dashboard=false", f"--temp-dir={temp}"] if i == 0 \
                else [f"--address={address}"]
            started.append(subprocess.Popen([str(RAY), "start", *where, *common], stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL, start_new_session=True, env=env))
            _wait_for_nodes(address, i + 1)
        yield address
    finally:
        for p in reversed(started):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        for p in started:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        shutil.rmtree(temp, ignore_errors=True)


def _wait_for_nodes(address: str, count: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = subprocess.run([str(RAY), "status", f"--address={address}"], capture_output=True, text=True)
        if status.returncode == 0 and status.stdout.count(" node_") >= count:
            return
        time.sleep(0.5)
    raise TimeoutError(f"the Ray cluster at {address} has not {count} nodes after {timeout:.0f} s")


@pytest.mark.slow
def test_a_two_node_cluster_gives_the_same_points(local: tuple[Path, dict, float], spec: Path,
                                                  tmp_path: Path) -> None:
    start = time.perf_counter()
    with ray_cluster(2) as address:
        up = time.perf_counter()
        code, summary, err = sweep(spec, "-o", tmp_path / "sweep", "--address", address)
        done = time.perf_counter()
    print(f"two-node cluster: {up - start:.1f} s to start, sweep {done - up:.1f} s, "
          f"{time.perf_counter() - start:.1f} s in all")
    assert code == 0, err
    assert (summary["computed"], summary["nodes"]) == (16, 2)
    assert results(tmp_path / "sweep") == results(local[0])
    assert (tmp_path / "sweep" / "report.md").read_text() == (local[0] / "report.md").read_text()
    assert front(tmp_path / "sweep") == front(local[0])


def front(folder: Path) -> list[dict]:
    return [{k: v for k, v in p.items() if k not in TIMING_FIELDS}
            for p in json.loads((folder / "pareto.json").read_text())["points"]]


BAD_SPECS = [
    ("recipes: ['']\nboards: [u280]\n", "model: missing"),
    ("model: {model}\nrecipes: ['']\nboards: [u280]\nboard: u55c\n", "board: unknown key"),
    ("model: {model}\nrecipes: ['']\nboards: [u280]\ncards: [1, 2]\nparallel: [diagonal]\n",
     "parallel: expected pipeline or tensor, got 'diagonal'"),
    ("model: {model}\nrecipes: ['quantize{{bits=99}}']\nboards: [u280]\n", "recipes[0]: "),
    ("model: {model}\nrecipes: ['', '']\nboards: [u280]\n", "recipes: '' is listed twice"),
    ("model: {model}\nrecipes: ['']\nboards: [u280, u999]\n", "boards[1]: 'u999' is not a bundled board"),
    ("model: {model}\nrecipes: ['']\nboards: [u280]\ncontext: [0]\n", "context: expected token counts"),
    ("model: {model}\nrecipes: ['']\nboards: [u280]\ncontext: 256\n", "context: 256 tokens cannot hold"),
    ("model: {model}\nrecipes: ['']\nboards: [u280]\ncontext: 4096\n", "context: 4096 tokens exceed"),
    ("model: {model}\nrecipes: ['']\nboards: [u280]\nengines: [{{budget: 1}}]\n", "engines[0]: unknown engine"),
    ("model: {model}\nrecipes: ['']\nboards: [u280]\neval_windows: -1\n", "eval_windows: expected an integer"),
    ("model: {model}\nrecipes: ['']\nboards: [u280]\nshapes_only: yes please\n", "shapes_only: expected true"),
    ("model: {model}\nrecipes: ['']\nboards: [u280]\nconfig: {{hidden_size: 64}}\n", "config: config values apply"),
    ("model: no-such-model\nrecipes: ['']\nboards: [u280]\n", "model: 'no-such-model' is no file"),
    ("model: llama\nrecipes: ['']\nboards: [u280]\n", "config: the architecture name 'llama' needs"),
    ("model: [\n", "not valid YAML at line"),
    ("- a list\n", "expected a mapping"),
]


@pytest.mark.parametrize("text, message", BAD_SPECS, ids=[m.split(":")[0] for _, m in BAD_SPECS])
def test_a_bad_spec_is_one_line_and_exit_2(text: str, message: str, tiny_llmc: Path, tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text.format(model=tiny_llmc))
    code, _, err = sweep(path, "-o", tmp_path / "out")
    assert code == 2
    assert err.startswith("llmc: error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert message in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("parallel", ["pipeline", "tensor"])
def test_a_point_of_two_cards_is_the_clusters_timing_model(tiny_llmc: Path, tmp_path: Path, parallel: str) -> None:
    """A point with cards: 2 is the cluster compile's run over the host link (llmc simulate --timing-only
    on the folder llmc compile --cards 2 writes); its resources are the busiest card's."""
    from llmc.io import load_module
    from llmc.sweep.point import Job, evaluate_point
    from llmc.sweep.spec import Point

    module = load_module(tiny_llmc)
    record = evaluate_point(module, None, Job("k", Point("", "u280", 2, 128, (), parallel), 0, 16, 8))
    assert record["status"] == "ok", record["error"]
    assert record["cards"] == 2 and record["parallel"] == parallel
    assert main(["compile", str(tiny_llmc), "--cards", "2", "--parallel", parallel, "--context", "128",
                 "--eval-windows", "0", "-o", str(tmp_path / "c")]) == 0
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["simulate", str(tmp_path / "c"), "--timing-only", "--prefill", "16", "--decode", "8", "--json"]) == 0
    assert record["decode_tokens_per_s"] == pytest.approx(json.loads(out.getvalue())["modelled"]["host"]["tokens_per_s"])
    assert 0 < record["resource_fraction"] < 1 and record["joules_per_token"] > 0


def test_a_point_can_pin_the_clock(tiny_llmc: Path) -> None:
    """``engines: [{clock_mhz: N}]`` pins the kernel clock the exploration would otherwise choose."""
    from llmc.io import load_module
    from llmc.sweep.point import Job, evaluate_point
    from llmc.sweep.spec import Point

    module = load_module(tiny_llmc)
    record = evaluate_point(module, None, Job("k", Point("", "u280", 1, 128, (("clock_mhz", 150),)), 0, 16, 8))
    assert record["status"] == "ok", record["error"]
    assert record["design"]["clock_mhz"] == 150 and record["design"]["port_bits"] in (128, 256, 512)


def test_workers_and_address_exclude_each_other(spec: Path, tmp_path: Path) -> None:
    code, _, err = sweep(spec, "-o", tmp_path / "out", "--address", "127.0.0.1:1", "--workers", "2")
    assert code == 2 and "--workers sizes a local Ray" in err
