"""The instruction-set simulator: executes ``program.bin`` on ``weights.bin`` as the kernel does.

State is the accelerator's: the weight channels' bytes, the KV channels' bytes, the io buffer and
the on-chip activation buffers. Every instruction decodes its fields, reads and writes those
bytes at the addresses the compiler assigned, and computes with the ``hw_*`` ops' reference
semantics (``llmc/ir/ops/hw.py``), vectorised over rows, so the ISS is bit-exact with the
interpreter on the lowered program and with C-simulation. Decoded weight tiles are cached, so
text generation on the bundled model is interactive. Each run also returns the modelled time of
every instruction (:mod:`llmc.backends.fpga.timing`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from llmc.backends.fpga import pack
from llmc.backends.fpga.design import chunks
from llmc.backends.fpga.isa import ACT_FNS, Instruction, MmFlags
from llmc.backends.fpga.timing import Cost, TimingModel
from llmc.errors import LlmcError
from llmc.generate.loop import AppendingDevice
from llmc.ir.ops import hw_math as hm
from llmc.ir.registry import OPS, RefContext
from llmc.sim.image import ProjectImage

ACT_NAMES = {number: name for name, number in ACT_FNS.items()}


def _ref(op: str, ins: list[np.ndarray], **attrs: Any) -> list[np.ndarray]:
    return OPS[op].ref(ins, OPS[op].with_defaults(attrs), RefContext({}))


class MatmulWeights:
    """One layer's weights decoded from its tiles: codes [n, k], scales, zeros, minimums, bias and the op's attributes."""

    def __init__(self, lanes: list[np.ndarray], f: dict[str, Any], tile_n: int) -> None:
        flags = MmFlags.decode(int(f["flags"]))
        self.bits, engine, sparse = flags.bits, flags.engine_name, flags.sparse
        self.has_zero, self.has_bias, self.signed, self.to_io = flags.has_zero, flags.has_bias, not flags.unsigned, flags.to_io
        n, k, group = int(f["n"]), int(f["k"]), int(f["group"])
        groups = k // group
        self.has_min = flags.has_min
        layout = pack.tile_layout(engine, self.bits, tile_n, k, groups, self.has_zero, self.has_bias, sparse,
                                  flags.half_scales, self.has_min)
        if layout["size"] != int(f["tile_bytes"]):
            raise LlmcError(f"MM at weight_off {f['weight_off']}: tile_bytes {f['tile_bytes']} != layout "
                            f"{layout['size']}")
        codes, scales, zeros, mins, bias = [], [], [], [], []
        for t in range(int(f["tiles"])):
            lane = lanes[t % len(lanes)]
            at = int(f["weight_off"]) + (t // len(lanes)) * layout["size"]
            tile = lane[at:at + layout["size"]]
            if len(tile) != layout["size"]:
                raise LlmcError(f"MM tile {t} at {at} lies outside weight channel {t % len(lanes)}")
            code_end = pack.code_bytes(engine, self.bits, tile_n, k, sparse)
            codes.append(pack.unpack_codes(tile[:code_end].tobytes(), tile_n, k, engine, self.bits, self.signed,
                                           sparse))
            if flags.half_scales:  # f16 values, as the engine converts them
                halves = _words(tile, layout["scales"], tile_n * groups, "<u2")
                scales.append(pack.half_scale_ints(halves, int(f["shift"])).reshape(tile_n, groups))
            else:
                scales.append(_words(tile, layout["scales"], tile_n * groups, "<i4").reshape(tile_n, groups))
            if self.has_zero:
                zeros.append(_words(tile, layout["zeros"], tile_n * groups, "<i2").reshape(tile_n, groups))
            if self.has_min:
                mins.append(_words(tile, layout["mins"], tile_n * groups, "<i4").reshape(tile_n, groups))
            if self.has_bias:
                bias.append(_words(tile, layout["bias"], tile_n, "<i4"))
        self.inputs = [np.concatenate(codes)[:n], np.concatenate(scales)[:n].astype(np.int64)]
        if self.has_zero:
            self.inputs.append(np.concatenate(zeros)[:n].astype(np.int64))
        if self.has_min:
            self.inputs.append(np.concatenate(mins)[:n].astype(np.int64))
        if self.has_bias:
            self.inputs.append(np.concatenate(bias)[:n].astype(np.int32))
        self.attrs = {"group": group, "shift": int(f["shift"]), "scale_bits": 62, "engine": engine,
                      "sparse": f"{sparse[0]}:{sparse[1]}" if sparse else "", "has_zero": self.has_zero,
                      "has_min": self.has_min, "has_bias": self.has_bias}


def _words(tile: np.ndarray, at: int, count: int, dtype: str) -> np.ndarray:
    size = np.dtype(dtype).itemsize
    return np.frombuffer(tile[at:at + count * size].tobytes(), dtype=dtype)


class Iss:
    """The accelerator's state and one program run at a time."""

    def __init__(self, image: ProjectImage, timing: TimingModel | None = None) -> None:
        if image.lanes is None:
            raise LlmcError(f"{image.path}: compiled without weights (--shapes-only); use --timing-only")
        self.image = image
        self.lanes = image.lanes
        self.timing = timing or TimingModel.for_image(image)
        self.kv = [np.zeros(n, dtype=np.uint8) for n in image.kv_bytes]
        self.io = np.zeros(int(image.io["io_bytes"]) + int(image.io.get("mail_bytes", 0)), dtype=np.uint8)
        self.act: dict[int, np.ndarray] = {}
        self.weights: dict[int, MatmulWeights] = {}
        self.capture: dict[int, np.ndarray] | None = None  # MM weight_off -> its input rows, when set

    def reset(self) -> None:
        """Clear the KV cache (the card's memory keeps its contents; a run overwrites what it reads)."""
        for ch in self.kv:
            ch[:] = 0

    def run(self, ids: Sequence[int], start_pos: int) -> tuple[np.ndarray, list[Cost]]:
        """Run ``ids`` at positions ``start_pos..``, chunked by bucket; logits [len(ids), vocab] and the
        modelled cost of every instruction executed."""
        self.image.check_run(start_pos, ids)
        out: list[np.ndarray] = []
        costs: list[Cost] = []
        for bucket, first, rows in chunks(len(ids), self.image.bucket_for):
            out.append(self.execute(bucket, np.asarray(ids[first:first + rows], dtype=np.int32),
                                    start_pos + first, costs))
        return np.concatenate(out), costs

    def execute(self, bucket: int, ids: np.ndarray, start_pos: int, costs: list[Cost]) -> np.ndarray:
        """One kernel call: ``ids`` into io, the bucket's program, logits out of io."""
        self.put_ids(ids)
        program = self.image.programs[bucket]
        self.segment(bucket, 0, len(program), len(ids), start_pos)
        costs += self.timing.program(program, len(ids), start_pos)
        return self.logits(len(ids))

    def put_ids(self, ids: np.ndarray) -> None:
        at = self.image.io["ids_offset"]
        self.io[at:at + 4 * len(ids)] = ids.astype("<i4").view(np.uint8)

    def logits(self, rows: int) -> np.ndarray:
        at, vocab = self.image.io["logits_offset"], self.image.vocab
        return self.io[at:at + rows * vocab * 4].view("<f4").reshape(rows, vocab).copy()

    def segment(self, bucket: int, first: int, end: int, rows: int, start_pos: int) -> int:
        """Execute the bucket's instructions from ``first`` to its next SYNC, HALT or ``end``; the
        index after the one it stopped at."""
        program = self.image.programs[bucket]
        pc = first
        while pc < end:
            instr = program[pc]
            pc += 1
            if instr.op in ("HALT", "SYNC"):
                break
            getattr(self, f"_{instr.op.lower()}")(instr, rows, start_pos)
        return pc

    # --- memory ------------------------------------------------------------------------------------
    def _read(self, mem: np.ndarray, at: int, count: int, dtype: str) -> np.ndarray:
        size = np.dtype(dtype).itemsize
        if at + count * size > len(mem):
            raise LlmcError(f"read of {count * size} bytes at {at} outside a {len(mem)}-byte channel")
        return mem[at:at + count * size].view(dtype)

    def _src(self, buffer: int, rows: int) -> np.ndarray:
        if buffer not in self.act:
            raise LlmcError(f"activation buffer b{buffer} read before it was written")
        return self.act[buffer][:rows]

    # --- instructions ------------------------------------------------------------------------------
    def _embed(self, ins: Instruction, rows: int, start_pos: int) -> None:
        cols, lanes = int(ins.fields["cols"]), len(self.lanes)
        row_bytes = pack.align(cols * 2)
        if int(ins.fields["by_position"]):
            ids = np.arange(start_pos, start_pos + rows) + int(ins.fields["offset"])
        else:
            ids = self.io[self.image.io["ids_offset"]:][:4 * rows].view("<i4") + int(ins.fields["offset"])
        table = np.stack([self._read(self.lanes[i % lanes], int(ins.fields["table_off"]) + (i // lanes) * row_bytes,
                                     cols, "<f2") for i in ids.tolist()])
        self.act[ins.dst] = _ref("hw_embed", [table, np.arange(rows)])[0]

    def _vector(self, at: int, count: int) -> np.ndarray:
        """An f32 vector striped over the lanes (:func:`~llmc.backends.fpga.pack.vector_slice`)."""
        per = pack.vector_slice(count, len(self.lanes))
        return np.concatenate([self._read(lane, at, min(per, count - i * per), "<f4")
                               for i, lane in enumerate(self.lanes) if i * per < count])

    def _lnorm(self, ins: Instruction, rows: int, start_pos: int) -> None:
        cols = int(ins.fields["cols"])
        w = self._vector(int(ins.fields["weight_off"]), cols)
        b = self._vector(int(ins.fields["bias_off"]), cols)
        self.act[ins.dst] = _ref("hw_layer_norm", [self._src(ins.src0, rows), w, b], eps=ins.fields["eps"])[0]

    def _norm(self, ins: Instruction, rows: int, start_pos: int) -> None:
        w = self._vector(int(ins.fields["weight_off"]), int(ins.fields["cols"]))
        self.act[ins.dst] = _ref("hw_rms_norm", [self._src(ins.src0, rows), w], eps=ins.fields["eps"],
                                 group=int(ins.fields["group"]))[0]

    def _matmul_weights(self, fields: dict[str, Any], weight_off: int) -> MatmulWeights:
        """The matrix whose tiles start at ``weight_off``, decoded on first use."""
        if weight_off not in self.weights:
            self.weights[weight_off] = MatmulWeights(self.lanes, {**fields, "weight_off": weight_off},
                                                     self.image.config.mm_tile_n)
        return self.weights[weight_off]

    def _mm(self, ins: Instruction, rows: int, start_pos: int) -> None:
        key = int(ins.fields["weight_off"])
        w = self._matmul_weights(ins.fields, key)
        x = self._src(ins.src0, rows)
        if self.capture is not None:
            self.capture.setdefault(key, x.copy())
        y = _ref("hw_matmul", [x, *w.inputs], **w.attrs)[0]
        if w.to_io:
            at = int(ins.fields["io_off"])
            logits = _ref("hw_to_float", [y], cap=float(ins.fields["cap"]))[0]
            self.io[at:at + y.size * 4] = logits.astype("<f4").reshape(-1).view(np.uint8)
        else:
            self.act[ins.dst] = y

    def _xmm(self, ins: Instruction, rows: int, start_pos: int) -> None:
        """Each chosen expert's matrix decoded from its tiles (at ``weight_off + e * expert_stride``)
        and applied to the rows that chose it."""
        f = ins.fields
        route = self._src(ins.src1, rows)
        ids = route[:, 2 * int(f["slot"])].astype(np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= int(f["experts"])):
            raise LlmcError(f"XMM at weight_off {f['weight_off']}: route names expert {int(ids.max())} of "
                            f"{int(f['experts'])}")
        x = self._src(ins.src0, rows)
        out = np.zeros((rows, int(f["n"])), dtype=np.int32)
        for e in np.unique(ids).tolist():
            w = self._matmul_weights(f, int(f["weight_off"]) + e * int(f["expert_stride"]))
            out[ids == e] = _ref("hw_matmul", [x[ids == e], *w.inputs], **w.attrs)[0]
        self.act[ins.dst] = out

    def _route(self, ins: Instruction, rows: int, start_pos: int) -> None:
        self.act[ins.dst] = _ref("hw_route", [self._src(ins.src0, rows)], top_k=int(ins.fields["top_k"]),
                                 normalize=bool(ins.fields["normalize"]))[0]

    def _weigh(self, ins: Instruction, rows: int, start_pos: int) -> None:
        self.act[ins.dst] = _ref("hw_weigh", [self._src(ins.src0, rows), self._src(ins.src1, rows)],
                                 slot=int(ins.fields["slot"]))[0]

    def _rope(self, ins: Instruction, rows: int, start_pos: int) -> None:
        half = int(ins.fields["rotary_dim"]) // 2
        span = (start_pos + rows) * half
        cos = self._read(self.lanes[0], int(ins.fields["cos_off"]), span, "<i4").reshape(-1, half)[start_pos:]
        sin = self._read(self.lanes[0], int(ins.fields["sin_off"]), span, "<i4").reshape(-1, half)[start_pos:]
        self.act[ins.dst] = _ref("hw_rope", [self._src(ins.src0, rows), np.arange(rows), cos, sin],
                                 head_dim=int(ins.fields["head_dim"]), rotary_dim=int(ins.fields["rotary_dim"]))[0]

    def _kvapp(self, ins: Instruction, rows: int, start_pos: int) -> None:
        f = ins.fields
        kvh, d = int(f["kv_heads"]), int(f["head_dim"])
        codes, scales = hm.quant8(self._src(ins.src0, rows), d)
        codes = codes.astype(np.int8).view(np.uint8)
        scales = scales.astype("<i4").view(np.uint8)
        channels = len(self.kv)
        for t in range(rows):
            channel, at = self.kv[(start_pos + t) % channels], (start_pos + t) // channels
            channel[int(f["codes_off"]) + at * kvh * d:][:kvh * d] = codes[t]
            channel[int(f["scales_off"]) + at * kvh * 4:][:kvh * 4] = scales[t]

    def _cache(self, codes_off: int, scales_off: int, s: int, kvh: int, d: int) -> tuple[np.ndarray, ...]:
        """Cache rows ``0..s-1`` gathered from the KV channels they are striped over."""
        channels = len(self.kv)
        per = -(-s // channels)  # rows read from the fullest channel
        codes = np.stack([self._read(ch, codes_off, per * kvh * d, "<i1").reshape(per, kvh * d) for ch in self.kv],
                         axis=1)
        scales = np.stack([self._read(ch, scales_off, per * kvh, "<i4").reshape(per, kvh) for ch in self.kv], axis=1)
        return codes.reshape(per * channels, kvh * d)[:s], scales.reshape(per * channels, kvh)[:s]

    def _attn(self, ins: Instruction, rows: int, start_pos: int) -> None:
        f = ins.fields
        kvh, d, s = int(f["kv_heads"]), int(f["head_dim"]), start_pos + rows
        kc, ks = self._cache(int(f["k_codes_off"]), int(f["k_scales_off"]), s, kvh, d)
        vc, vs = self._cache(int(f["v_codes_off"]), int(f["v_scales_off"]), s, kvh, d)
        self.act[ins.dst] = _ref("hw_attention", [self._src(ins.src0, rows), kc, ks, vc, vs], heads=int(f["heads"]),
                                 kv_heads=kvh, head_dim=d, scale=float(f["scale"]), window=int(f["window"]),
                                 softcap=float(f["softcap"]))[0]

    def _act(self, ins: Instruction, rows: int, start_pos: int) -> None:
        self.act[ins.dst] = _ref("hw_act", [self._src(ins.src0, rows)], fn=ACT_NAMES[int(ins.fields["fn"])])[0]

    def _emul(self, ins: Instruction, rows: int, start_pos: int) -> None:
        self.act[ins.dst] = _ref("hw_mul", [self._src(ins.src0, rows), self._src(ins.src1, rows)])[0]

    def _eadd(self, ins: Instruction, rows: int, start_pos: int) -> None:
        self.act[ins.dst] = _ref("hw_add", [self._src(ins.src0, rows), self._src(ins.src1, rows)])[0]

    def _send(self, ins: Instruction, rows: int, start_pos: int) -> None:
        at, data = int(ins.fields["io_off"]), self._src(ins.src0, rows)
        self.io[at:at + data.size * 4] = data.astype("<i4").reshape(-1).view(np.uint8)

    def _recv(self, ins: Instruction, rows: int, start_pos: int) -> None:
        at, cols = int(ins.fields["io_off"]), int(ins.fields["cols"])
        self.act[ins.dst] = self._read(self.io, at, rows * cols, "<i4").reshape(rows, cols).astype(np.int32)

    def _escale(self, ins: Instruction, rows: int, start_pos: int) -> None:
        vec = self._vector(int(ins.fields["vec_off"]), int(ins.fields["cols"]))
        self.act[ins.dst] = _ref("hw_scale", [self._src(ins.src0, rows), vec])[0]


class IssDevice(AppendingDevice):
    """The simulator behind the generation loop's device interface (``reset``/``prefill``/``decode``);
    ``last_seconds`` is the modelled time of the last call and ``costs`` its instructions' costs."""

    def __init__(self, project: ProjectImage | str, timing: TimingModel | None = None) -> None:
        image = project if isinstance(project, ProjectImage) else ProjectImage.load(project)
        self.iss = Iss(image, timing)
        self.length = 0
        self.last_seconds = 0.0
        self.costs: list[Cost] = []

    @property
    def image(self) -> ProjectImage:
        return self.iss.image

    def reset(self) -> None:
        self.iss.reset()
        self.length = 0

    def run(self, ids: Sequence[int]) -> np.ndarray:
        """Append ``ids``; their logits [len(ids), vocab]."""
        logits, self.costs = self.iss.run(ids, self.length)
        self.length += len(ids)
        self.last_seconds = self.iss.timing.seconds(self.costs)
        return logits
