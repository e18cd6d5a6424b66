"""The Vitis project: build-file templates, the XRT host, write_project and build_project."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import struct
import subprocess
from pathlib import Path

import pytest
from jinja2 import UndefinedError

from llmc.backends.fpga.container import write_container
from llmc.backends.fpga.design import INSTR_BITS, AcceleratorConfig
from llmc.backends.fpga.project import build_files, build_project, project_context, render, write_project
from llmc.backends.fpga.target import load_target
from llmc.errors import LlmcError
from llmc.manifest import MANIFEST, read_manifest

TARGET = load_target("u280")
SOURCES = ["kernel/llmc_accel.cpp", "kernel/engines.cpp"]
BANKS = {"program": "DDR[0]", "w0": "HBM[0]", "w1": "HBM[1]", "w2": "HBM[2]", "w3": "HBM[3]", "kv0": "HBM[8]",
         "kv1": "HBM[9]", "io": "HBM[12]"}  # fmt: skip


def _config(clock_mhz: float = 300.0) -> AcceleratorConfig:
    return AcceleratorConfig(
        target="u280", clock_mhz=clock_mhz, mm_lanes=4, mm_tile_n=16, mm_tile_k=64, weight_bits=(8, 4),
        sparse_n=0, sparse_m=0, lut_lanes=2, lut_g=4, lut_bits=(2,), sfu_lanes=16, max_rows=4, max_hidden=512,
        max_context=64, act_buffers=4, weight_channels=(0, 1, 2, 3), kv_channels=(8, 9), io_channel=12,
        buckets=(1, 4),
    )  # fmt: skip


@pytest.fixture
def project() -> dict:
    return project_context("toy", TARGET, _config(), SOURCES)


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def test_connectivity(project: dict) -> None:
    lines = _lines(render("build/connectivity.cfg.j2", project=project))
    assert lines == [
        "[connectivity]", "nk=llmc_accel:1:llmc_accel_1", *(f"sp=llmc_accel_1.{p}:{m}" for p, m in BANKS.items()),
        "slr=llmc_accel_1:SLR0",
    ]  # fmt: skip


@pytest.mark.parametrize(("clock_mhz", "period"), [(300.0, "3.333"), (250.0, "4.000")])
def test_hls_config(clock_mhz: float, period: str) -> None:
    project = project_context("toy", TARGET, _config(clock_mhz), SOURCES)
    lines = _lines(render("build/hls_config.cfg.j2", project=project))
    assert lines == [
        f"part={TARGET.part}", "[hls]", "flow_target=vitis", f"clock={period}ns", "syn.top=llmc_accel",
        "syn.file=kernel/llmc_accel.cpp", "syn.file=kernel/engines.cpp", "syn.cflags=-I include",
        "syn.blackbox.file=rtl/llmc_lut_mac_g4b2l16z.json", "package.output.format=xo",
        "package.output.file=build/hls/llmc_accel.xo",
    ]  # fmt: skip


def test_run_hls_tcl(project: dict) -> None:
    lines = _lines(render("build/run_hls.tcl.j2", project=project))
    assert "set_top llmc_accel" in lines and "open_solution -reset -flow_target vitis solution" in lines
    assert [line for line in lines if line.startswith("add_files")] == [
        *(f'add_files {source} -cflags "-I$root/include"' for source in SOURCES),
        "add_files -blackbox rtl/llmc_lut_mac_g4b2l16z.json",
    ]
    assert f"set_part {TARGET.part}" in lines and "create_clock -period 3.333 -name default" in lines
    assert lines.index("csynth_design") < lines.index(
        "export_design -format xo -output $root/build/vitis_hls/llmc_accel.xo"
    )


def test_makefile_text(project: dict) -> None:
    text = render("build/Makefile.j2", project=project)
    assert "TARGET ?= hw\n" in text and f"PLATFORM ?= {TARGET.platform}\n" in text
    assert "CLOCK_HZ := 300000000\n" in text and f"KERNEL_SRC := {' '.join(SOURCES)}\n" in text
    assert "\tv++ -c -t $(TARGET) --platform $(PLATFORM) -k llmc_accel" in text
    assert (
        "--config connectivity.cfg" in text
        and "-o $@ $(XO)" in text
        and "XCLBIN := llmc_accel.$(TARGET).xclbin" in text
    )
    assert "-I$(XILINX_XRT)/include" in text and "-L$(XILINX_XRT)/lib -lxrt_coreutil -pthread" in text
    assert "csim:\n\tllmc csim .\n" in text
    assert not [line for line in text.splitlines() if line.startswith("    ")]  # recipes are indented with tabs


def _fake_tools(folder: Path) -> Path:
    """A bin folder with a v++ that logs its arguments and creates its -o output."""
    bin_dir = folder / "bin"
    bin_dir.mkdir()
    tool = bin_dir / "v++"
    tool.write_text(
        '#!/bin/sh\necho "v++ $*" >> "$VPP_LOG"\n'
        'while [ $# -gt 0 ]; do if [ "$1" = -o ]; then mkdir -p "$(dirname "$2")"; touch "$2"; fi; shift; done\n'
    )
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    return bin_dir


def _make(folder: Path, *args: str, path: str, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != "XILINX_XRT"} | {"PATH": path} | env
    return subprocess.run(["make", *args], cwd=folder, env=environment, capture_output=True, text=True)


@pytest.mark.skipif(shutil.which("make") is None, reason="GNU make not found on PATH")
def test_makefile_runs(project: dict, tmp_path: Path) -> None:
    folder = tmp_path / "project"
    write_project(folder, {**build_files(project), **{source: "// kernel\n" for source in SOURCES}})
    system = f"{os.path.dirname(shutil.which('make'))}:/usr/bin:/bin"  # no v++ there
    result = _make(folder, "xclbin", path=system)
    assert result.returncode != 0 and "v++ not found on PATH" in result.stderr
    result = _make(folder, "TARGET=fpga", path=system)
    assert result.returncode != 0 and "TARGET must be hw, hw_emu or sw_emu, not 'fpga'" in result.stderr
    result = _make(folder, "host", path=system)
    assert result.returncode != 0 and "XILINX_XRT is not set" in result.stderr

    log = tmp_path / "vpp.log"
    path = f"{_fake_tools(tmp_path)}:{system}"
    result = _make(folder, "xclbin", "TARGET=hw_emu", path=path, VPP_LOG=str(log))
    assert result.returncode == 0, result.stderr
    compile_, link = log.read_text().splitlines()
    assert compile_.startswith(f"v++ -c -t hw_emu --platform {TARGET.platform} -k llmc_accel")
    assert "--hls.clock 300000000:llmc_accel" in compile_ and compile_.endswith(
        f"-o build/hw_emu/llmc_accel.xo {' '.join(SOURCES)}"
    )
    assert link.startswith("v++ -l -t hw_emu") and "--config connectivity.cfg" in link
    assert link.endswith("-o llmc_accel.hw_emu.xclbin build/hw_emu/llmc_accel.xo")
    assert (folder / "llmc_accel.hw_emu.xclbin").exists()
    assert _make(folder, "xclbin", "TARGET=hw_emu", path=path, VPP_LOG=str(log)).returncode == 0
    assert len(log.read_text().splitlines()) == 2  # up to date: nothing rebuilt


def test_build_files(project: dict) -> None:
    files = build_files(project)
    assert sorted(files) == sorted([
        "Makefile", "connectivity.cfg", "hls_config.cfg", "run_hls.tcl", "host/host.cpp", "include/llmc_container.h",
        "include/llmc_sha256.h",
    ])  # fmt: skip
    assert files["include/llmc_sha256.h"].startswith("// SHA-256")
    assert build_files(project) == files


def test_render_undefined_is_an_error() -> None:
    with pytest.raises(UndefinedError, match="project"):
        render("build/connectivity.cfg.j2")


# write_project


def _tree(folder: Path) -> dict[str, bytes]:
    """The files of ``folder`` but its manifest."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != MANIFEST}


FILES = {"Makefile": "all:\n", "include/a.h": "// a\n", "weights.bin": b"\x00\x01"}


def test_write_project(tmp_path: Path) -> None:
    out = tmp_path / "out" / "proj"
    write_project(out, FILES)
    assert _tree(out) == {"Makefile": b"all:\n", "include/a.h": b"// a\n", "weights.bin": b"\x00\x01"}
    assert read_manifest(out) == {name: hashlib.sha256(bytes(v, "utf-8") if isinstance(v, str) else v).hexdigest()
                                  for name, v in FILES.items()}
    assert os.listdir(out.parent) == ["proj"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((out / "Makefile").stat().st_mode) == 0o666 & ~umask  # not a temporary file's 0600


def test_write_project_refuses_existing(tmp_path: Path) -> None:
    out = tmp_path / "proj"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(LlmcError, match=r"proj: output folder exists \(use --force to replace it\)"):
        write_project(out, FILES)
    assert _tree(out) == {"keep.txt": b"mine"}


def test_write_project_force_replaces(tmp_path: Path) -> None:
    out = tmp_path / "proj"
    write_project(out, {"old.txt": "old"})
    write_project(out, FILES, force=True)
    assert sorted(_tree(out)) == ["Makefile", "include/a.h", "weights.bin"]
    assert os.listdir(tmp_path) == ["proj"]


@pytest.mark.parametrize("force", [False, True])
def test_write_project_failure_leaves_nothing(tmp_path: Path, force: bool) -> None:
    out = tmp_path / "proj"
    if force:
        write_project(out, {"old.txt": "old"})
    with pytest.raises(TypeError):
        write_project(out, {"a.txt": "first", "z.bin": object()}, force=force)  # type: ignore[dict-item]
    assert os.listdir(tmp_path) == (["proj"] if force else [])
    if force:
        assert _tree(out) == {"old.txt": b"old"}


@pytest.mark.parametrize("name", ["../escape.txt", "/abs.txt", ""])
def test_write_project_bad_path(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="relative path"):
        write_project(tmp_path / "proj", {name: "x"})
    assert os.listdir(tmp_path) == []


def test_write_project_deterministic(tmp_path: Path, project: dict) -> None:
    files = build_files(project)
    write_project(tmp_path / "a", files)
    write_project(
        tmp_path / "b", dict(reversed(list(build_files(project_context("toy", TARGET, _config(), SOURCES)).items())))
    )
    assert _tree(tmp_path / "a") == _tree(tmp_path / "b")


# build_project


def test_build_project_without_vitis(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_project(tmp_path / "proj", {"Makefile": "all:\n"})
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    message = (
        "synthesis needs Vitis: v++ not found on PATH (source the Vitis settings64.sh); "
        f"the project in {tmp_path / 'proj'} is ready for `make TARGET=hw`"
    )
    with pytest.raises(LlmcError) as e:
        build_project(tmp_path / "proj")
    assert str(e.value) == message


def test_build_project_checks(tmp_path: Path) -> None:
    with pytest.raises(LlmcError, match="unknown build target 'fpga'"):
        build_project(tmp_path, "fpga")
    with pytest.raises(LlmcError, match="no Makefile"):
        build_project(tmp_path)


@pytest.mark.skipif(shutil.which("make") is None, reason="GNU make not found on PATH")
def test_build_project_runs_make(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", f"{_fake_tools(tmp_path)}:{os.environ['PATH']}")
    write_project(tmp_path / "ok", {"Makefile": "all:\n\techo $(TARGET) > built.txt\n"})
    build_project(tmp_path / "ok", "sw_emu")
    assert (tmp_path / "ok" / "built.txt").read_text() == "sw_emu\n"
    write_project(tmp_path / "bad", {"Makefile": "all:\n\tfalse\n"})
    with pytest.raises(LlmcError, match=r"make TARGET=hw failed \(exit code 2\)"):
        build_project(tmp_path / "bad")


# The XRT host: compiled against the real XRT headers where installed, and always (with g++) against a small
# functional stand-in of the XRT API whose "kernel" writes one-hot logits at (id * 7 + pos) % vocab.

XRT_STUB = {
    "xrt/xrt_device.h": r"""
#pragma once
#include <string>
namespace xrt {
struct uuid {};
class device {
 public:
  explicit device(unsigned int) {}
  uuid load_xclbin(const std::string&) { return {}; }
};
}  // namespace xrt
""",
    "xrt/xrt_bo.h": r"""
#pragma once
#include <cstdint>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <vector>
#include "xrt/xrt_device.h"
enum xclBOSyncDirection { XCL_BO_SYNC_BO_TO_DEVICE, XCL_BO_SYNC_BO_FROM_DEVICE };
namespace xrt {
using memory_group = uint32_t;
class bo {  // separate host and device copies: only sync moves data between them
 public:
  bo(const device&, size_t size, memory_group)
      : host_(std::make_shared<std::vector<uint8_t>>(size, 0xAB)), dev_(std::make_shared<std::vector<uint8_t>>(size, 0xCD)) {}
  size_t size() const { return host_->size(); }
  void* map() { return host_->data(); }
  template <typename T> T map() { return reinterpret_cast<T>(map()); }
  void sync(xclBOSyncDirection d, size_t n, size_t at) const {
    check(n, at);
    if (d == XCL_BO_SYNC_BO_TO_DEVICE) std::memcpy(dev_->data() + at, host_->data() + at, n);
    else std::memcpy(host_->data() + at, dev_->data() + at, n);
  }
  void sync(xclBOSyncDirection d) const { sync(d, size(), 0); }
  void write(const void* src, size_t n, size_t at) { check(n, at); std::memcpy(host_->data() + at, src, n); }
  void read(void* dst, size_t n, size_t at) const { check(n, at); std::memcpy(dst, host_->data() + at, n); }
  uint8_t* device_bytes() const { return dev_->data(); }
 private:
  void check(size_t n, size_t at) const { if (at + n > size()) throw std::out_of_range("bo access out of range"); }
  std::shared_ptr<std::vector<uint8_t>> host_, dev_;
};
}  // namespace xrt
""",
    "xrt/xrt_kernel.h": r"""
#pragma once
#include <cstdio>
#include <map>
#include <string>
#include "xrt/xrt_bo.h"
enum ert_cmd_state { ERT_CMD_STATE_COMPLETED = 4 };
namespace xrt {
class kernel {
 public:
  kernel(const device&, const uuid&, const std::string& name) { if (name != "llmc_accel") throw std::runtime_error(name); }
  int group_id(int index) const { return index; }
};
class run {
 public:
  explicit run(const kernel&) {}
  void set_arg(int index, const bo& buffer) { buffers_.insert_or_assign(index, buffer); }
  void set_arg(int index, int value) { scalars_[index] = value; }
  ert_cmd_state wait() const { return ERT_CMD_STATE_COMPLETED; }
  void start() {
    auto value = [](const uint8_t* p) { int32_t v; std::memcpy(&v, p, 4); return v; };
    const int rows = scalars_.at(ARG_SEQ_LEN), start_pos = scalars_.at(ARG_START_POS);
    std::fprintf(stderr, "run bucket=%d n_instr=%d seq_len=%d start_pos=%d", value(buffers_.at(0).device_bytes()),
                 scalars_.at(ARG_N_INSTR), rows, start_pos);
    for (const auto& [index, buffer] : buffers_) {
      if (index != 0 && index != ARG_IO) std::fprintf(stderr, " %d:%zu:%d", index, buffer.size(), buffer.device_bytes()[0]);
    }
    std::fprintf(stderr, "\n");
    uint8_t* io = buffers_.at(ARG_IO).device_bytes();
    for (int r = 0; r < rows; ++r) {
      const int32_t id = value(io + IDS_OFFSET + 4 * r), pos = value(io + POS_OFFSET + 4 * r);
      for (int v = 0; v < VOCAB; ++v) {
        const float logit = v == (id * 7 + pos) % VOCAB ? 1.0f : 0.0f;
        std::memcpy(io + LOGITS_OFFSET + 4 * (VOCAB * r + v), &logit, 4);
      }
    }
  }
 private:
  std::map<int, bo> buffers_;
  std::map<int, int> scalars_;
};
}  // namespace xrt
""",
}
INSTR_BYTES = INSTR_BITS // 8
IO = {"ids_offset": 0, "pos_offset": 64, "logits_offset": 128}
VOCAB = 11


@pytest.fixture
def host(tmp_path: Path, project: dict) -> Path:
    if shutil.which("g++") is None:
        pytest.skip("g++ not found on PATH: the XRT host cannot be compiled")
    folder = tmp_path / "proj"
    write_project(folder, {**build_files(project), **{f"stub/{name}": text for name, text in XRT_STUB.items()}})
    ports = [port["name"] for port in project["ports"]]
    args = {"ARG_IO": "io", "ARG_N_INSTR": "n_instr", "ARG_SEQ_LEN": "seq_len", "ARG_START_POS": "start_pos"}
    defines = [f"-D{macro}={ports.index(port)}" for macro, port in args.items()]
    defines += [f"-D{key.upper()}={value}" for key, value in IO.items()] + [f"-DVOCAB={VOCAB}"]
    command = ["g++", "-std=c++17", "-Wall", "-Wextra", "-Werror", "-I", "stub", "-I", "include", *defines,
               "host/host.cpp", "-o", "llmc_host"]  # fmt: skip
    result = subprocess.run(command, cwd=folder, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    kv_bytes = {port: 8192 for port in ports if port.startswith("kv")}
    program = {"program_digest": "d" * 64, "vocab": VOCAB, "max_context": 64, "io_bytes": 4096, "io": IO,
               "kv_bytes": kv_bytes}
    buckets = {f"bucket_{rows}": struct.pack("<i", rows) + bytes(INSTR_BYTES * (rows + 1) - 4) for rows in (1, 4)}
    write_container(folder / "program.bin", "program", program, buckets)
    weights = {"program_digest": "d" * 64, "kv_bytes_per_channel": 8192}
    write_container(folder / "weights.bin", "weights", weights, {f"w{i}": bytes([17 + i]) * 5000 for i in range(4)})
    return folder


def test_host_generates(host: Path) -> None:
    prompt = [3, 9, 2, 5, 1, 8, 4]
    result = subprocess.run(["./llmc_host", "--prompt-ids", ",".join(map(str, prompt)), "--max-new-tokens", "4"],
                            cwd=host, capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stderr
    tokens, position = [(prompt[-1] * 7 + 6) % VOCAB], 7
    while len(tokens) < 4:
        tokens.append((tokens[-1] * 7 + position) % VOCAB)
        position += 1
    assert result.stdout == " ".join(map(str, tokens)) + "\n"
    runs = result.stderr.splitlines()
    buffers = " 1:5000:17 2:5000:18 3:5000:19 4:5000:20 5:8192:0 6:8192:0"
    assert runs == [
        f"run bucket=4 n_instr=5 seq_len=4 start_pos=0{buffers}", f"run bucket=4 n_instr=5 seq_len=3 start_pos=4{buffers}",
        *(f"run bucket=1 n_instr=2 seq_len=1 start_pos={p}{buffers}" for p in (7, 8, 9)),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--prompt-ids", "1", "--weights", "other.bin"], "other.bin was packed for another program than program.bin"),
     (["--prompt-ids", "1,2", "--max-new-tokens", "64"], "need 65 positions, the design holds 64"),
     (["--prompt-ids", "1,x"], "--prompt-ids expects a non-negative integer, got 'x'"),
     (["--max-new-tokens", "3"], "--prompt-ids is required"), (["--bogus", "1"], "unknown option --bogus")],
)  # fmt: skip
def test_host_errors(host: Path, args: list[str], message: str) -> None:
    write_container(host / "other.bin", "weights", {"program_digest": "e" * 64, "kv_bytes_per_channel": 1}, {})
    result = subprocess.run(["./llmc_host", *args], cwd=host, capture_output=True, text=True)
    assert result.returncode == 1 and result.stderr.startswith("error: ") and message in result.stderr


XRT_INCLUDE = Path("/opt/xilinx/xrt/include")


@pytest.mark.skipif(not XRT_INCLUDE.is_dir(), reason=f"XRT headers not installed ({XRT_INCLUDE} is absent)")
@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ not found on PATH")
def test_host_compiles_against_xrt(project: dict, tmp_path: Path) -> None:
    write_project(tmp_path / "proj", build_files(project))
    command = ["g++", "-std=c++17", "-fsyntax-only", "-I", "include", "-I", str(XRT_INCLUDE), "host/host.cpp"]
    result = subprocess.run(command, cwd=tmp_path / "proj", capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
