"""The program/weights container: Python writer and reader, and the C++ reader of llmc_container.h."""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

import llmc
from llmc.backends.fpga.container import (
    ENTRY,
    HEADER,
    container_bytes,
    file_digest,
    read_container,
    write_container,
)
from llmc.errors import LlmcError

INCLUDE = Path(llmc.__file__).parent / "hls_templates" / "include"
METADATA = {
    "program_digest": "ab" * 32,
    "io": {"ids_offset": 0, "pos_offset": 64, "logits_offset": 128},
    "name": "n\u00e4me \U0001f600",
    "kv_bytes_per_channel": 1 << 33,
    "list": [1, {"x": [2, "]"]}, None, True],
}
SECTIONS = {
    "w0": bytes(range(256)) * 20,
    "w1": b"",
    "w2": np.arange(1000, dtype=np.float32),
    "w3": b"\x01" * 4096,
    "x" * 48: b"last",
}


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def _table(data: bytes) -> dict[str, tuple[int, int]]:
    """Section name -> (offset, size), parsed independently of the reader."""
    _, _, _, _, count, _, meta_len = HEADER.unpack_from(data)
    entries = [ENTRY.unpack_from(data, HEADER.size + meta_len + i * ENTRY.size) for i in range(count)]
    return {raw.rstrip(b"\0").decode(): (offset, size) for raw, offset, size, _ in entries}


@pytest.fixture
def weights(tmp_path: Path) -> Path:
    path = tmp_path / "weights.bin"
    write_container(path, "weights", METADATA, SECTIONS)
    return path


def test_round_trip(weights: Path) -> None:
    c = read_container(weights, "weights")
    assert c.metadata == METADATA
    assert list(c.sections) == list(SECTIONS)
    for name, payload in SECTIONS.items():
        assert bytes(c.sections[name]) == bytes(memoryview(payload).cast("B"))
    assert c.digest == file_digest(weights) == hashlib.sha256(weights.read_bytes()).hexdigest()


def test_layout(weights: Path) -> None:
    data = weights.read_bytes()
    magic, major, minor, kind, count, reserved, meta_len = HEADER.unpack_from(data)
    assert (magic, major, minor, kind, count, reserved) == (b"LLMCBIN\0", 1, 0, 2, len(SECTIONS), 0)
    assert (
        data[HEADER.size : HEADER.size + meta_len]
        == json.dumps(METADATA, sort_keys=True, separators=(",", ":")).encode()
    )
    head_end = HEADER.size + meta_len + count * ENTRY.size
    assert data[head_end : head_end + 32] == hashlib.sha256(data[:head_end]).digest()
    table = _table(data)
    assert table["w0"] == (4096, 5120) and table["w1"] == (12288, 0) and table["w2"] == (12288, 4000)
    assert all(offset % 4096 == 0 for offset, _ in table.values())
    assert data[head_end + 32 : 4096] == bytes(4096 - head_end - 32)  # zero padding
    assert data[4096 + 5120 : 12288] == bytes(12288 - 4096 - 5120)
    assert len(data) == table["x" * 48][0] + 4


def test_deterministic(tmp_path: Path) -> None:
    reordered = dict(reversed(list(METADATA.items())))
    a = write_container(tmp_path / "a.bin", "program", METADATA, SECTIONS)
    b = write_container(tmp_path / "b.bin", "program", reordered, SECTIONS)
    assert (tmp_path / "a.bin").read_bytes() == (tmp_path / "b.bin").read_bytes()
    assert a == b == file_digest(tmp_path / "a.bin")
    assert container_bytes("program", METADATA, SECTIONS) == (tmp_path / "a.bin").read_bytes()


def test_empty_container(tmp_path: Path) -> None:
    write_container(tmp_path / "p.bin", "program", {}, {})
    c = read_container(tmp_path / "p.bin", "program")
    assert c.metadata == {} and c.sections == {}


@pytest.mark.parametrize(
    ("kind", "metadata", "sections"),
    [
        ("bitstream", {}, {}),
        ("weights", {}, {"": b""}),
        ("weights", {}, {"y" * 49: b""}),
        ("weights", {}, {"a\0b": b""}),
        ("weights", {"x": float("nan")}, {}),
    ],
)
def test_bad_input(tmp_path: Path, kind: str, metadata: dict, sections: dict) -> None:
    with pytest.raises(ValueError):
        write_container(tmp_path / "x.bin", kind, metadata, sections)
    assert not list(tmp_path.iterdir())


def _corrupt_payload(path: Path) -> str:
    _flip(path, _table(path.read_bytes())["w3"][0] + 100)
    return "section 'w3' checksum mismatch (file corrupted?)"


def _corrupt_metadata(path: Path) -> str:
    _flip(path, HEADER.size + 3)
    return "header checksum mismatch (file corrupted?)"


def _newer_version(path: Path) -> str:
    data = bytearray(path.read_bytes())
    struct.pack_into("<HH", data, 8, 2, 0)
    path.write_bytes(bytes(data))
    return "format version 2.0 is newer than this llmc reads (1.x)"


def _bad_magic(path: Path) -> str:
    _flip(path, 0)
    return "not an llmc container (bad magic)"


def _truncated_header(path: Path) -> str:
    path.write_bytes(path.read_bytes()[:100])
    return "truncated"


def _truncated_payload(path: Path) -> str:
    path.write_bytes(path.read_bytes()[:-1])
    return f"section '{'x' * 48}' lies outside the file"


def _section_out_of_bounds(path: Path) -> str:
    """A table entry pointing past the end, with a header checksum that matches (a writer bug, not bit rot)."""
    data = bytearray(path.read_bytes())
    _, _, _, _, count, _, meta_len = HEADER.unpack_from(data)
    struct.pack_into("<Q", data, HEADER.size + meta_len + 48, len(data))  # first entry's offset
    head_end = HEADER.size + meta_len + count * ENTRY.size
    data[head_end : head_end + 32] = hashlib.sha256(data[:head_end]).digest()
    path.write_bytes(bytes(data))
    return "section 'w0' lies outside the file"


CORRUPTIONS = [
    _corrupt_payload,
    _corrupt_metadata,
    _newer_version,
    _bad_magic,
    _truncated_header,
    _truncated_payload,
    _section_out_of_bounds,
]


@pytest.mark.parametrize("corrupt", CORRUPTIONS)
def test_corruption_refused(weights: Path, corrupt) -> None:
    message = corrupt(weights)
    with pytest.raises(LlmcError) as e:
        read_container(weights, "weights")
    assert str(e.value).startswith(f"{weights}: ") and message in str(e.value)


def test_wrong_kind_and_missing_file(weights: Path, tmp_path: Path) -> None:
    with pytest.raises(LlmcError, match="is a weights container, expected program"):
        read_container(weights, "program")
    with pytest.raises(LlmcError, match="cannot read"):
        read_container(tmp_path / "missing.bin", "weights")
    (tmp_path / "empty.bin").write_bytes(b"")
    with pytest.raises(LlmcError, match="bad magic"):
        read_container(tmp_path / "empty.bin", "weights")


def test_older_major_refused(weights: Path) -> None:
    data = bytearray(weights.read_bytes())
    struct.pack_into("<H", data, 8, 0)
    weights.write_bytes(bytes(data))
    with pytest.raises(LlmcError, match=r"format version 0\.0 is not supported"):
        read_container(weights, "weights")


# The C++ reader, compiled with warnings as errors, run on files the Python writer made.
CHECK_CPP = r"""
#include <fstream>
#include <iostream>
#include <iterator>
#include <string>
#include <vector>

#include "llmc_container.h"

// check sha FILE: the file's SHA-256.  check open FILE KIND [int:KEY|str:KEY|has:NAME|sec:NAME]...
int main(int argc, char** argv) {
  try {
    const std::string mode = argv[1];
    if (mode == "sha") {
      std::ifstream in(argv[2], std::ios::binary);
      const std::vector<uint8_t> data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      std::cout << llmc::to_hex(llmc::sha256(data.data(), data.size())) << "\n";
      return 0;
    }
    const auto c = llmc::Container::open(argv[2], static_cast<uint32_t>(std::stoul(argv[3])));
    std::cout << "metadata " << c.metadata() << "\n";
    for (const auto& name : c.names()) {
      const auto& s = c.section(name);
      std::cout << "section " << name << " " << s.size() << " " << llmc::to_hex(llmc::sha256(s.data(), s.size()))
                << "\n";
    }
    for (int i = 4; i < argc; ++i) {
      const std::string arg = argv[i], key = arg.substr(4), what = arg.substr(0, 4);
      if (what == "int:") std::cout << key << " " << c.meta_int(key) << "\n";
      if (what == "str:") std::cout << key << " " << c.meta_string(key) << "\n";
      if (what == "has:") std::cout << key << " " << c.has(key) << "\n";
      if (what == "sec:") std::cout << key << " " << c.section(key).size() << "\n";
    }
  } catch (const std::exception& e) {
    std::cerr << e.what() << "\n";
    return 1;
  }
  return 0;
}
"""


@pytest.fixture(scope="module")
def check(tmp_path_factory: pytest.TempPathFactory) -> Path:
    gxx = shutil.which("g++")
    if gxx is None:
        pytest.skip("g++ not found on PATH: the C++ container reader cannot be compiled")
    folder = tmp_path_factory.mktemp("cpp")
    (folder / "check.cpp").write_text(CHECK_CPP)
    command = [gxx, "-std=c++17", "-Wall", "-Wextra", "-Werror", "-I", str(INCLUDE), "check.cpp", "-o", "check"]
    result = subprocess.run(command, cwd=folder, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return folder / "check"


def _run(check: Path, *args: object) -> subprocess.CompletedProcess:
    return subprocess.run([str(check), *map(str, args)], capture_output=True, text=True, encoding="utf-8")


@pytest.mark.parametrize("size", [0, 1, 55, 56, 63, 64, 65, 119, 120, 1000, 100_003])
def test_cpp_sha256(check: Path, tmp_path: Path, size: int) -> None:
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
    (tmp_path / "f").write_bytes(data)
    assert _run(check, "sha", tmp_path / "f").stdout.strip() == hashlib.sha256(data).hexdigest()


def test_cpp_reads_container(check: Path, weights: Path) -> None:
    result = _run(
        check,
        "open",
        weights,
        2,
        "int:io.pos_offset",
        "int:kv_bytes_per_channel",
        "str:program_digest",
        "str:name",
        "has:w1",
        "has:w9",
        "sec:w3",
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "metadata " + json.dumps(METADATA, sort_keys=True, separators=(",", ":"))
    sections = [
        f"section {n} {len(memoryview(p).cast('B'))} {hashlib.sha256(p).hexdigest()}" for n, p in SECTIONS.items()
    ]
    assert lines[1 : 1 + len(SECTIONS)] == sections
    assert lines[1 + len(SECTIONS) :] == [
        "io.pos_offset 64",
        f"kv_bytes_per_channel {1 << 33}",
        f"program_digest {'ab' * 32}",
        "name n\u00e4me \U0001f600",
        "w1 1",
        "w9 0",
        "w3 4096",
    ]


@pytest.mark.parametrize("corrupt", CORRUPTIONS)
def test_cpp_refuses_corruption(check: Path, weights: Path, corrupt) -> None:
    message = corrupt(weights).replace("than this llmc reads", "than this reader")
    result = _run(check, "open", weights, 2)
    assert result.returncode == 1 and result.stderr.startswith(f"{weights}: ")
    assert message in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((1,), "is a weights container, expected program"),
        ((2, "int:io.nope"), "metadata has no key 'io.nope'"),
        ((2, "int:program_digest"), "metadata 'program_digest' is not an integer"),
        ((2, "str:io.ids_offset"), "metadata 'io.ids_offset' is not a string"),
        ((2, "int:name.x"), "metadata has no key 'name.x'"),
        ((2, "sec:w9"), "no section 'w9'"),
    ],
)
def test_cpp_errors(check: Path, weights: Path, args: tuple, message: str) -> None:
    result = _run(check, "open", weights, *args)
    assert result.returncode == 1 and result.stderr.strip().endswith(message), result.stderr
