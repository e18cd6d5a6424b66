"""Names and board fields that reach generated files cannot inject code: a project whose name carries
Make, Tcl, shell and C++ payloads is built with ``make -n``, sourced by ``tclsh`` and run as a
C-simulation, and nothing it carries executes; a board file whose part or platform could not be
written safely is refused in one line."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from zoo import FPGA_SMALL, config_file

import llmc
from llmc import safe_text
from llmc.backends.fpga.flow import compile_project
from llmc.backends.fpga.target import TARGETS_DIR, load_target
from llmc.cli import main
from llmc.errors import LlmcError
from llmc.sim.csim import CsimDevice

MARK = "pwned"
PAYLOAD = (f'x\n$(shell touch {MARK})\nall:\n\ttouch {MARK}\nexec touch {MARK}\n'
           f'std::system("touch {MARK}"); // \\\n*/ --> é; $(touch {MARK}) `touch {MARK}`')


@pytest.fixture(scope="module")
def hostile_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small model compiled as the project :data:`PAYLOAD` (the name defaults to the output folder's;
    this one holds ``/``, which a folder name cannot)."""
    model = llmc.load("llama", config=FPGA_SMALL)
    out = tmp_path_factory.mktemp("hostile") / PAYLOAD.replace("/", "_")
    compile_project(model.module, "u280", out, name=PAYLOAD)
    return out


def test_the_name_reaches_each_file_as_one_harmless_comment_line(hostile_project: Path) -> None:
    texts = {p: p.read_text() for p in hostile_project.rglob("*") if p.is_file() and p.suffix not in (".bin",)
             and p.name != "model.safetensors"}
    for path, text in texts.items():
        assert f"touch {MARK}\n" not in text and "\nexec touch" not in text, path
    header = (hostile_project / "kernel" / "llmc_accel.cpp").read_text().splitlines()[0]
    assert header.startswith(f'// llmc accelerator "{safe_text.comment(PAYLOAD)}": ')
    assert "\\" not in header and "*/" not in header and "$(" not in header


def test_make_dry_run_executes_nothing(hostile_project: Path, tmp_path: Path) -> None:
    for target in ("", "csim", "clean"):
        subprocess.run(["make", "-n", "-C", str(hostile_project), *([target] if target else [])], cwd=tmp_path,
                       capture_output=True, timeout=60)
    assert not (tmp_path / MARK).exists() and not (hostile_project / MARK).exists()


@pytest.mark.skipif(shutil.which("tclsh") is None, reason="tclsh not found (Debian package tcl)")
def test_tcl_script_executes_nothing(hostile_project: Path, tmp_path: Path) -> None:
    script = tmp_path / "driver.tcl"
    script.write_text("proc unknown args {}\nsource run_hls.tcl\n")  # Vitis HLS commands do nothing here
    result = subprocess.run(["tclsh", str(script)], cwd=hostile_project, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert not (hostile_project / MARK).exists()


def test_c_simulation_executes_nothing(hostile_project: Path, tmp_path: Path, gxx_ap_types,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with CsimDevice(hostile_project) as device:
        assert device.run([1, 2, 3]).shape == (3, FPGA_SMALL["vocab_size"])
    assert not (tmp_path / MARK).exists()


@pytest.mark.parametrize("field", ["part", "platform", "name"])
def test_a_board_field_that_cannot_be_written_safely_is_refused(field: str, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    board = yaml.safe_load((TARGETS_DIR / "u280.yaml").read_text())
    board[field] = f"xcu280\nexec touch {MARK}"
    path = tmp_path / "board.yaml"
    path.write_text(yaml.safe_dump(board))
    with pytest.raises(LlmcError, match=f"board.yaml: {field} .* may hold only letters"):
        load_target(str(path))
    assert main(["compile", "llama", "--config", str(config_file(tmp_path, FPGA_SMALL)), "--board", str(path),
                 "-o", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{field} " in err and not (tmp_path / "p").exists()


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf"])
def test_a_board_number_must_be_finite(value: str, tmp_path: Path) -> None:
    text = (TARGETS_DIR / "u280.yaml").read_text()
    path = tmp_path / "board.yaml"
    path.write_text(text.replace("bandwidth_gbs: 460", f"bandwidth_gbs: {value}", 1))
    assert path.read_text() != text
    with pytest.raises(LlmcError, match="memory.bandwidth_gbs must be a positive number"):
        load_target(str(path))


def test_a_binary_board_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "board.yaml"
    path.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(LlmcError, match="board.yaml: not a text file"):
        load_target(str(path))


@pytest.mark.parametrize("text", ["a b", "1x", "x-y", "x\n", "é", ""])
def test_identifier_refuses_what_is_not_a_symbol(text: str) -> None:
    with pytest.raises(LlmcError):
        safe_text.identifier(text)


@pytest.mark.parametrize("text", ["a b", "$(x)", "a;b", "a\nb", "-rf", "'q'", '"q"', "a\\b", "`x`", "{x}", ""])
def test_word_refuses_what_a_shell_make_or_tcl_would_read_as_syntax(text: str) -> None:
    with pytest.raises(LlmcError):
        safe_text.word(text)


def test_filters_keep_what_is_safe() -> None:
    assert safe_text.identifier("w_lane_3") == "w_lane_3"
    assert safe_text.word("/opt/xilinx/platforms/xilinx_u280_gen3x16_xdma_1_202211_1.xpfm").endswith(".xpfm")
    assert safe_text.word("xcu280-fsvh2892-2L-e") == "xcu280-fsvh2892-2L-e"
    assert safe_text.comment("Llama-2 7B (W4, g=128) @ 225 MHz") == "Llama-2 7B (W4, g=128) @ 225 MHz"
    assert safe_text.comment("a\nb */ c\\") == "a?b ?/ c?"
    assert safe_text.xml('<a & "b">') == "&lt;a &amp; &quot;b&quot;&gt;"
