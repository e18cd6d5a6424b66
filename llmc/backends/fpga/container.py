"""The binary container of ``program.bin`` and ``weights.bin``: JSON metadata plus named, checksummed sections.

Layout (little endian)::

    header   magic "LLMCBIN\\0", u16 major, u16 minor, u32 kind, u32 section count, u32 reserved (0),
             u64 metadata length
    metadata UTF-8 JSON (sorted keys, compact separators)
    table    per section: name (48 bytes UTF-8, NUL padded), u64 offset, u64 size, SHA-256 of the payload
    checksum SHA-256 of header + metadata + table
    payloads each at an offset aligned to 4096 bytes, zero padding between

``llmc/hls_templates/include/llmc_container.h`` reads the same format in C++.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from llmc.errors import LlmcError
from llmc.io import atomic_write

MAGIC = b"LLMCBIN\0"
FORMAT_MAJOR = 1
FORMAT_MINOR = 0
KINDS = {"program": 1, "weights": 2}
ALIGN = 4096
NAME_BYTES = 48
HEADER = struct.Struct("<8sHHIIIQ")
ENTRY = struct.Struct(f"<{NAME_BYTES}sQQ32s")
DIGEST_BYTES = 32


@dataclass(frozen=True)
class Container:
    """A verified container: its metadata, its sections (views into the mapped file) and the file's SHA-256."""

    metadata: dict
    sections: dict[str, memoryview]
    digest: str


def _align(offset: int) -> int:
    return -(-offset // ALIGN) * ALIGN


def _kind_code(kind: str) -> int:
    if kind not in KINDS:
        raise ValueError(f"container kind must be one of {sorted(KINDS)}, not {kind!r}")
    return KINDS[kind]


def container_bytes(kind: str, metadata: dict, sections: Mapping[str, bytes]) -> bytes:
    """The container holding ``metadata`` and ``sections`` (in the mapping's order), byte-identical for equal input.

    Payloads may be any contiguous buffer (bytes, bytearray, memoryview, NumPy array)."""
    code = _kind_code(kind)
    meta = json.dumps(metadata, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
    payloads = [memoryview(p).cast("B") for p in sections.values()]
    table, offsets = [], []
    offset = _align(HEADER.size + len(meta) + ENTRY.size * len(payloads) + DIGEST_BYTES)
    for name, payload in zip(sections, payloads):
        raw = name.encode()
        if not raw or len(raw) > NAME_BYTES or b"\0" in raw:
            raise ValueError(f"section name {name!r} must be 1 to {NAME_BYTES} UTF-8 bytes without NUL")
        table.append(ENTRY.pack(raw, offset, len(payload), hashlib.sha256(payload).digest()))
        offsets.append(offset)
        offset = _align(offset + len(payload))
    head = HEADER.pack(MAGIC, FORMAT_MAJOR, FORMAT_MINOR, code, len(payloads), 0, len(meta)) + meta + b"".join(table)
    parts: list[bytes | memoryview] = [head, hashlib.sha256(head).digest()]
    end = len(head) + DIGEST_BYTES
    for start, payload in zip(offsets, payloads):
        parts += [bytes(start - end), payload]
        end = start + len(payload)
    return b"".join(parts)


def write_container(path: Path, kind: str, metadata: dict, sections: Mapping[str, bytes]) -> str:
    """Write a container atomically; returns the hex SHA-256 of the file."""
    data = container_bytes(kind, metadata, sections)
    atomic_write(Path(path), data)
    return hashlib.sha256(data).hexdigest()


def file_digest(path: Path) -> str:
    """The hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    except OSError as e:
        raise LlmcError(f"{path}: cannot read: {e.strerror}") from None
    return digest.hexdigest()


def read_container(path: Path, kind: str) -> Container:
    """Map and verify a container of ``kind``: magic, version, kind, table bounds and every checksum."""
    code = _kind_code(kind)
    try:
        with open(path, "rb") as f:
            size = f.seek(0, 2)
            data = memoryview(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)) if size else memoryview(b"")
    except OSError as e:
        raise LlmcError(f"{path}: cannot read: {e.strerror}") from None
    if size < HEADER.size or data[:8] != MAGIC:
        raise LlmcError(f"{path}: not an llmc container (bad magic)")
    _, major, minor, found, count, _, meta_len = HEADER.unpack(data[: HEADER.size])
    if major > FORMAT_MAJOR:
        raise LlmcError(f"{path}: format version {major}.{minor} is newer than this llmc reads ({FORMAT_MAJOR}.x)")
    if major < FORMAT_MAJOR:
        raise LlmcError(f"{path}: format version {major}.{minor} is not supported (this llmc reads {FORMAT_MAJOR}.x)")
    head_end = HEADER.size + meta_len + ENTRY.size * count
    if head_end + DIGEST_BYTES > size:
        raise LlmcError(f"{path}: truncated (the header needs {head_end + DIGEST_BYTES} bytes, the file has {size})")
    if hashlib.sha256(data[:head_end]).digest() != data[head_end : head_end + DIGEST_BYTES]:
        raise LlmcError(f"{path}: header checksum mismatch (file corrupted?)")
    if found != code:
        names = {v: k for k, v in KINDS.items()}
        raise LlmcError(f"{path}: is a {names.get(found, f'kind {found}')} container, expected {kind}")
    try:
        metadata = json.loads(bytes(data[HEADER.size : HEADER.size + meta_len]))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LlmcError(f"{path}: corrupt metadata: {e}") from None
    if not isinstance(metadata, dict):
        raise LlmcError(f"{path}: corrupt metadata: not a JSON object")
    sections: dict[str, memoryview] = {}
    for i in range(count):
        raw, offset, length, checksum = ENTRY.unpack_from(data, HEADER.size + meta_len + i * ENTRY.size)
        try:
            name = raw.rstrip(b"\0").decode()
        except UnicodeDecodeError:
            raise LlmcError(f"{path}: section {i} has a corrupt name") from None
        if name in sections:
            raise LlmcError(f"{path}: section '{name}' appears twice")
        if offset < head_end + DIGEST_BYTES or offset + length > size:
            raise LlmcError(f"{path}: section '{name}' lies outside the file (offset {offset}, size {length})")
        payload = data[offset : offset + length]
        if hashlib.sha256(payload).digest() != checksum:
            raise LlmcError(f"{path}: section '{name}' checksum mismatch (file corrupted?)")
        sections[name] = payload
    return Container(metadata, sections, hashlib.sha256(data).hexdigest())
