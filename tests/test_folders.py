"""``--force`` replaces only a folder llmc wrote, and replacing one survives a kill at any point:
the old folder stays until the new one is complete, and leftovers are cleaned or named next time."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmc.cli import main
from llmc.errors import LlmcError
from llmc.folders import write_folder
from llmc.manifest import MANIFEST, check_files, read_manifest

OLD = {"a.txt": "old", "sub/b.bin": b"\x00old"}
NEW = {"a.txt": "new", "sub/b.bin": b"\x00new", "c.txt": "new"}


def tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != MANIFEST}


def encoded(files: dict) -> dict[str, bytes]:
    return {k: v.encode() if isinstance(v, str) else v for k, v in files.items()}


def test_force_replaces_a_folder_llmc_wrote(tmp_path: Path) -> None:
    out = tmp_path / "proj"
    write_folder(out, OLD, kind="project")
    write_folder(out, NEW, kind="project", force=True)
    assert tree(out) == encoded(NEW) and os.listdir(tmp_path) == ["proj"]
    check_files(out, NEW)


def test_force_refuses_a_folder_llmc_did_not_write(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    assert main(["compile", "llmc-tiny", "-o", str(mine), "--force"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not written by llmc (no valid llmc-manifest.json)" in err
    assert tree(mine) == {"thesis.tex": b"years of work"}


def test_force_refuses_files_llmc_did_not_write_but_allows_build_products(tmp_path: Path) -> None:
    out = tmp_path / "proj"
    write_folder(out, OLD, kind="project", products=("build", "*.log"))
    (out / "build").mkdir()
    (out / "build" / "x.xo").write_text("v++ output")
    (out / "vivado.log").write_text("log")
    write_folder(out, OLD, kind="project", force=True, products=("build", "*.log"))
    (out / "sub" / "notes.txt").write_text("mine")
    with pytest.raises(LlmcError, match="holds sub/notes.txt, which llmc did not write"):
        write_folder(out, NEW, kind="project", force=True, products=("build", "*.log"))
    assert (out / "sub" / "notes.txt").read_text() == "mine" and tree(out)["a.txt"] == b"old"


def test_force_refuses_the_current_folder_home_and_links(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "proj"
    write_folder(out, OLD, kind="project")
    monkeypatch.chdir(out)
    with pytest.raises(LlmcError, match="is the current folder or one above it"):
        write_folder(Path("."), NEW, kind="project", force=True)
    with pytest.raises(LlmcError, match="is the current folder or one above it"):
        write_folder(tmp_path, NEW, kind="project", force=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(out))
    with pytest.raises(LlmcError, match="is the home folder"):
        write_folder(out, NEW, kind="project", force=True)
    link = tmp_path / "link"
    link.symlink_to(out)
    with pytest.raises(LlmcError, match="is a symbolic link"):
        write_folder(link, NEW, kind="project", force=True)
    assert tree(out) == encoded(OLD)


def test_a_changed_or_swapped_file_is_named(tmp_path: Path) -> None:
    out = tmp_path / "proj"
    write_folder(out, OLD, kind="project")
    (out / "a.txt").write_text("tampered")
    with pytest.raises(LlmcError, match="a.txt: does not match llmc-manifest.json"):
        check_files(out, ["a.txt", "sub/b.bin"])
    (out / MANIFEST).write_text("{not json")
    with pytest.raises(LlmcError, match="llmc-manifest.json: missing or corrupt"):
        check_files(out, ["a.txt"])


KILLED = """
import os, shutil, signal, sys
from pathlib import Path
import llmc.folders as folders
stage = sys.argv[2]
calls = {"n": 0}
def die(real):
    def wrapper(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)
    return wrapper
if stage == "writing":
    Path.write_bytes = die(Path.write_bytes)
elif stage == "after-exchange":
    folders.shutil.rmtree = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
elif stage == "between-renames":
    folders._exchange = lambda a, b: False
    folders.os.replace = die(os.replace)
folders.write_folder(Path(sys.argv[1]), {"a.txt": "new", "sub/b.bin": bytes([0]) + b"new", "c.txt": "new"}, kind="project",
                     force=True)
"""


def kill_while_replacing(out: Path, stage: str) -> None:
    write_folder(out, OLD, kind="project")
    child = subprocess.run([sys.executable, "-c", KILLED, str(out), stage], capture_output=True, timeout=60)
    assert child.returncode == -9, child.stderr.decode()


@pytest.mark.parametrize("stage", ["writing", "after-exchange"])
def test_a_kill_at_any_point_leaves_a_whole_folder_and_the_next_run_cleans_up(tmp_path: Path, stage: str) -> None:
    out = tmp_path / "proj"
    kill_while_replacing(out, stage)
    assert tree(out) in (encoded(OLD), encoded(NEW)), stage  # never a missing or half-written project
    assert read_manifest(out) is not None
    write_folder(out, NEW, kind="project", force=True)  # the next run removes what was left
    assert os.listdir(tmp_path) == ["proj"] and tree(out) == encoded(NEW)


def test_without_an_atomic_exchange_the_next_run_restores_the_old_folder(tmp_path: Path) -> None:
    out = tmp_path / "proj"
    kill_while_replacing(out, "between-renames")  # two renames: killed between them, the old folder is aside
    assert not out.exists()
    with pytest.raises(LlmcError, match="output folder exists"):
        write_folder(out, NEW, kind="project")  # restored first, so not replaced without --force
    assert tree(out) == encoded(OLD) and os.listdir(tmp_path) == ["proj"]


def test_a_leftover_without_a_manifest_is_named_and_kept(tmp_path: Path) -> None:
    out = tmp_path / "proj"
    stray = tmp_path / ".proj.0123456789ab.tmp"
    stray.mkdir()
    (stray / "x").write_text("?")
    with pytest.warns(UserWarning, match="left by an interrupted run"):
        write_folder(out, OLD, kind="project")
    assert stray.exists() and tree(out) == encoded(OLD)
