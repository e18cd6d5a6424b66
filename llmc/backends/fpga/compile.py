"""The instruction compiler: a lowered ``step`` function becomes one program per length bucket,
with its weights placed on the HBM pseudo-channels and packed as the engines read them.

Activations live in on-chip buffers, allocated by liveness (decode and prefill chunks never
spill activations to HBM); weights stream from the lanes' channels, matrix tiles round-robin so
every lane reads its own channel; the KV cache is striped by position over the KV channels (cache
row ``j`` on KV channel ``j mod C``, at row ``j div C`` of each cache's region, the same offsets on
every channel); only logits leave through the io channel. A bucket's program differs from
another's in how many activation rows each weight tile serves (``row_block``): one program serves
every length in its bucket because the row count is a kernel argument.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from llmc.backends.fpga import pack
from llmc.backends.fpga.design import AcceleratorConfig
from llmc.backends.fpga.isa import ACT_FNS, Instruction, mm_flags
from llmc.errors import LlmcError
from llmc.ir.graph import Function, Module, Node, Value


class Channel:
    """One memory channel being filled: a cursor, and the bytes when weights are present."""

    def __init__(self, with_data: bool) -> None:
        self.size = 0
        self.data = bytearray() if with_data else None

    def reserve(self, nbytes: int, at: int | None = None) -> int:
        offset = pack.align(self.size) if at is None else at
        self.size = max(self.size, offset + pack.align(nbytes))
        if self.data is not None and len(self.data) < self.size:
            self.data.extend(bytes(self.size - len(self.data)))
        return offset

    def put(self, offset: int, data: bytes) -> None:
        if self.data is not None:
            self.data[offset:offset + len(data)] = data


@dataclass
class Compiled:
    config: AcceleratorConfig
    programs: dict[int, list[Instruction]]
    weights: list[Channel]
    kv_bytes: list[int]
    io: dict[str, int]
    buffers: int
    max_tile_bytes: int
    layers: list[dict] = field(default_factory=list)  # per MM: name, n, k, bits, engine, tiles, bytes, offset


@dataclass(frozen=True)
class Links:
    """A card's part in a cluster: the segment of each instruction (by its node's first result),
    how many segments every card's program has, and each slot's offset in the mail region."""

    segment_of: dict[str, int]
    segments: int
    mail: dict[int, int]
    mail_bytes: int


class Compiler:
    def __init__(self, module: Module, config: AcceleratorConfig, with_data: bool = True,
                 links: Links | None = None) -> None:
        self.module, self.config = module, config
        self.links = links
        self.step = module.functions["step"]
        with_data = with_data and module.has_weights
        self.lanes = [Channel(with_data) for _ in config.weight_channels]
        self.kv_size = 0  # bytes used on every KV channel
        self.producers = self.step.producers()
        self.placed: dict[str, int] = {}
        self.caches: dict[str, tuple[int, int]] = {}  # cache value -> codes_off, scales_off
        # hw_quant8 codes -> the concat that appends them to a cache (the cache's value)
        self.appends = {n.inputs[1].name: n.outputs[0].name for n in self.step.nodes if n.op == "concat"}
        self.layers: list[dict] = []
        self.max_tile = 0
        self.to_io = logits_values(module)
        self.logits_cap = next((float(n.attrs.get("cap", 0.0)) for n in self.step.nodes if n.op == "hw_to_float"), 0.0)
        self.buffer_of, self.buffers = allocate_buffers(self.step, self.to_io)
        if self.buffers > config.act_buffers:
            raise LlmcError(f"{module.name}: the program needs {self.buffers} activation buffers; the design has "
                            f"{config.act_buffers}")

    # --- memory ---------------------------------------------------------------------------------
    def data(self, v: Value) -> np.ndarray | None:
        node = self.producers[v.name]
        return self.module.params[node.attrs["name"]].data

    def name(self, v: Value) -> str:
        return self.producers[v.name].attrs["name"]

    def vector(self, v: Value) -> int:
        """An f32 vector (norm weights and biases, smoothing factors) striped over the lanes
        (:func:`~llmc.backends.fpga.pack.vector_slice`): its offset on every lane."""
        name = self.name(v)
        if name not in self.placed:
            count, lanes = int(np.prod(v.type.static_shape())), len(self.lanes)
            per = pack.vector_slice(count, lanes)
            self.placed[name] = self.striped(lanes, per * 4)
            arr = self.data(v)
            if arr is not None:
                flat = np.ascontiguousarray(arr, dtype="<f4").reshape(-1)
                for lane in range(lanes):
                    if lane * per < count:
                        self.put_block(self.placed[name], lane, per * 4, flat[lane * per:(lane + 1) * per].tobytes())
        return self.placed[name]

    def misc(self, v: Value, dtype: str) -> int:
        """A small parameter on lane 0 (RoPE tables)."""
        name = self.name(v)
        if name not in self.placed:
            arr = self.data(v)
            nbytes = int(np.prod(v.type.static_shape())) * np.dtype(dtype).itemsize
            self.placed[name] = self.lanes[0].reserve(nbytes)
            if arr is not None:
                self.lanes[0].put(self.placed[name], np.ascontiguousarray(arr, dtype=dtype).tobytes())
        return self.placed[name]

    def striped(self, nblocks: int, block_bytes: int) -> int:
        """The same offset on every lane for ``nblocks`` blocks dealt round-robin."""
        at = pack.align(max(ch.size for ch in self.lanes))
        per_lane = -(-nblocks // len(self.lanes))
        for ch in self.lanes:
            ch.reserve(per_lane * block_bytes, at)
        return at

    def put_block(self, base: int, index: int, block_bytes: int, data: bytes) -> None:
        lanes = len(self.lanes)
        self.lanes[index % lanes].put(base + (index // lanes) * block_bytes, data)

    # --- instructions ---------------------------------------------------------------------------
    def embed(self, node: Node) -> dict:
        table = node.inputs[0]
        name = self.name(table)
        rows, cols = table.type.static_shape()
        row_bytes = pack.align(cols * 2)
        if name not in self.placed:
            self.placed[name] = self.striped(rows, row_bytes)
            arr = self.data(table)
            if arr is not None:
                f16 = np.ascontiguousarray(arr, dtype="<f2")
                for r in range(rows):
                    self.put_block(self.placed[name], r, row_bytes, f16[r].tobytes())
        by_position = node.inputs[1].name == "position_ids"
        return {"cols": cols, "table_off": self.placed[name], "by_position": int(by_position),
                "offset": node.attrs.get("offset", 0)}

    def matmul(self, node: Node, row_block: int, to_io: bool) -> dict:
        """MM fields of a ``hw_matmul`` (placing its tiles on first use); with ``hw_expert_matmul``,
        XMM's: each expert's tiles from lane 0, ``expert_stride`` bytes after the previous expert's."""
        a = node.attrs
        experts = node.op == "hw_expert_matmul"
        codes_v = node.inputs[2 if experts else 1]
        shape = codes_v.type.static_shape()
        count, (n, k) = (shape[0], shape[1:]) if experts else (1, shape)
        group, bits, engine = a["group"], codes_v.type.dtype.bits, a["engine"]
        sparse = self._sparse(node)
        tile_n = self.config.mm_tile_n
        half, has_min = a.get("half_scales", False), a.get("has_min", False)
        layout = pack.tile_layout(engine, bits, tile_n, k, k // group, a["has_zero"], a["has_bias"], sparse, half,
                                  has_min)
        tiles = -(-n // tile_n)
        lane_tiles = -(-tiles // len(self.lanes))
        stride = lane_tiles * layout["size"]  # one expert's bytes on each lane
        name = self.name(codes_v)
        if name not in self.placed:
            self.placed[name] = self.striped(count * lane_tiles * len(self.lanes), layout["size"])
            weights = [self.data(v) for v in node.inputs[2 if experts else 1:]]
            if all(w is not None for w in weights):
                for e in range(count):
                    self._pack_matmul(node, codes_v, [w[e] if experts else w for w in weights], layout, tiles,
                                      self.placed[name] + e * stride, sparse)
            self.layers.append({"name": name.removesuffix(".hw_codes"), "n": n, "k": k, "bits": bits, "engine": engine,
                                "sparse": f"{sparse[0]}:{sparse[1]}" if sparse else "", "tiles": tiles,
                                "bytes": count * tiles * layout["size"], "offset": self.placed[name],
                                **({"experts": count} if experts else {})})
        flags = mm_flags(bits, engine, a["has_zero"], a["has_bias"], not codes_v.type.dtype.signed, sparse, to_io,
                         half_scales=half, has_min=has_min)
        self.max_tile = max(self.max_tile, layout["size"])
        fields = {"n": n, "k": k, "group": group, "shift": a["shift"], "flags": flags,
                  "weight_off": self.placed[name], "tile_bytes": layout["size"], "row_block": row_block,
                  "tiles": tiles, "io_off": self.io_logits if to_io else 0, "cap": self.logits_cap if to_io else 0.0}
        if experts:
            fields.update(experts=count, expert_stride=stride, slot=a["slot"])
        return fields

    @staticmethod
    def _sparse(node: Node) -> tuple[int, int] | None:
        if node.attrs["engine"] != "sparse":
            return None
        n, m = (int(x) for x in node.attrs.get("sparse", "").split(":"))
        return n, m

    def _pack_matmul(self, node: Node, codes_v: Value, arrays: list[np.ndarray], layout: dict[str, int], tiles: int,
                     base: int, sparse: tuple[int, int] | None) -> None:
        """Pack one matrix (codes, scales, zeros, minimums, bias) as ``tiles`` tiles dealt over the lanes from ``base``."""
        a, tile_n = node.attrs, self.config.mm_tile_n
        codes, scales = arrays[0].astype(np.int64), arrays[1]
        if a.get("half_scales", False):
            try:
                scales = pack.half_scale_bits(scales, a["shift"])
            except ValueError as e:
                raise LlmcError(f"{self.name(codes_v)}: {e}") from None
        zeros = arrays[2] if a["has_zero"] else None
        mins = arrays[2 + int(a["has_zero"])] if a.get("has_min", False) else None
        bias = arrays[-1] if a["has_bias"] else None
        n, bits = codes.shape[0], codes_v.type.dtype.bits
        for t in range(tiles):
            rows = slice(t * tile_n, min(n, (t + 1) * tile_n))
            parts = [_pad_rows(x, rows, tile_n) for x in (codes, scales, zeros, bias, mins)]
            try:
                data = pack.pack_tile(*parts[:4], layout, a["engine"], bits, sparse, parts[4])
            except ValueError as e:
                raise LlmcError(f"{self.name(codes_v)}: {e}") from None
            self.put_block(base, t, layout["size"], data)

    def kv_cache(self, node: Node) -> dict:
        """The KV cache a ``hw_quant8`` appends to, given a region on every KV channel on first use."""
        key = self.appends[node.outputs[0].name]
        d = node.attrs["group"]
        kvh = node.inputs[0].type.shape[1].value // d
        if key not in self.caches:
            rows = -(-self.config.max_context // len(self.config.kv_channels))
            codes_off = pack.align(self.kv_size)
            scales_off = pack.align(codes_off + rows * kvh * d)
            self.kv_size = scales_off + pack.align(rows * kvh * 4)
            self.caches[key] = (codes_off, scales_off)
        codes_off, scales_off = self.caches[key]
        return {"codes_off": codes_off, "scales_off": scales_off, "kv_heads": kvh, "head_dim": d}

    def program(self, bucket: int) -> list[Instruction]:
        """The program for chunks of up to ``bucket`` rows."""
        out: list[Instruction] = []
        segment = 0
        for node in self.step.nodes:
            fields, op = self._fields(node, bucket)
            if op is None:
                continue
            if self.links is not None:  # a card of a cluster: end segments until this node's
                wanted = self.links.segment_of[node.outputs[0].name]
                out += [Instruction("SYNC")] * (wanted - segment)
                segment = max(segment, wanted)
            srcs = [self.buffer_of[v.name] for v in node.inputs if v.name in self.buffer_of] + [0, 0]
            dst = self.buffer_of.get(node.outputs[0].name, 0) if node.outputs else 0
            out.append(Instruction(op, dst, srcs[0], srcs[1], fields))
        if self.links is not None:
            out += [Instruction("SYNC")] * (self.links.segments - 1 - segment)
        out.append(Instruction("HALT"))
        return out

    def _fields(self, node: Node, bucket: int) -> tuple[dict, str | None]:
        a = node.attrs
        if node.op in ("param", "concat"):
            return {}, None
        shape = node.inputs[0].type.shape if node.inputs else ()
        cols = shape[1].value if len(shape) == 2 else 0
        if node.op == "hw_embed":
            return self.embed(node), "EMBED"
        if node.op == "hw_rms_norm":
            return {"cols": cols, "weight_off": self.vector(node.inputs[1]), "eps": float(np.float32(a["eps"])),
                    "group": a.get("group", 0)}, "NORM"
        if node.op == "hw_layer_norm":
            return {"cols": cols, "weight_off": self.vector(node.inputs[1]),
                    "bias_off": self.vector(node.inputs[2]), "eps": float(np.float32(a["eps"]))}, "LNORM"
        if node.op == "hw_matmul":
            return self.matmul(node, bucket, node.outputs[0].name in self.to_io), "MM"
        if node.op == "hw_expert_matmul":
            return self.matmul(node, bucket, False), "XMM"
        if node.op == "hw_route":
            return {"cols": cols, "top_k": a["top_k"], "normalize": int(a["normalize"])}, "ROUTE"
        if node.op == "hw_weigh":
            return {"cols": cols, "slot": a["slot"]}, "WEIGH"
        if node.op == "hw_rope":
            return {"cols": cols, "head_dim": a["head_dim"], "cos_off": self.misc(node.inputs[2], "<i4"),
                    "sin_off": self.misc(node.inputs[3], "<i4"), "rotary_dim": a.get("rotary_dim", 0) or a["head_dim"]}, "ROPE"
        if node.op == "hw_quant8":
            return self.kv_cache(node), "KVAPP"
        if node.op == "hw_attention":
            k, v = self.caches[node.inputs[1].name], self.caches[node.inputs[3].name]
            return {"heads": a["heads"], "kv_heads": a["kv_heads"], "head_dim": a["head_dim"], "scale": a["scale"],
                    "softcap": a.get("softcap", 0.0),
                    "k_codes_off": k[0], "k_scales_off": k[1], "v_codes_off": v[0], "v_scales_off": v[1],
                    "window": a.get("window", 0)}, "ATTN"
        if node.op == "hw_act":
            return {"cols": cols, "fn": ACT_FNS[a["fn"]]}, "ACT"
        if node.op in ("hw_mul", "hw_add"):
            return {"cols": cols}, {"hw_mul": "EMUL", "hw_add": "EADD"}[node.op]
        if node.op == "hw_scale":
            return {"cols": cols, "vec_off": self.vector(node.inputs[1])}, "ESCALE"
        if node.op == "hw_to_float":  # fused into the matmul that produces the logits
            return {}, None
        if node.op in ("hw_send", "hw_recv"):
            if self.links is None:
                raise LlmcError(f"{self.module.name}: %{node.outputs[0].name} = {node.op} outside a cluster")
            cols = node.outputs[0].type.shape[1].value
            return {"cols": cols, "io_off": self.io_mail + self.links.mail[node.attrs["slot"]]}, \
                "SEND" if node.op == "hw_send" else "RECV"
        raise LlmcError(f"{self.module.name}: %{node.outputs[0].name} = {node.op} has no instruction")

    def run(self) -> Compiled:
        """Programs and memory map. io holds the ids and positions, the logits (on the card that
        makes them: ``vocab`` > 0) and, after ``io_bytes``, a cluster card's mail region."""
        vocab = next((n.inputs[0].type.shape[1].value for n in self.step.nodes if n.op == "hw_to_float"), 0)
        rows = self.config.max_rows
        self.io_logits = pack.align(8 * rows)
        self.io_mail = self.io_logits + pack.align(rows * vocab * 4)
        io = {"ids_offset": 0, "pos_offset": 4 * rows, "logits_offset": self.io_logits,
              "io_bytes": self.io_mail, "vocab": vocab}
        if self.links is not None:
            io.update(mail_offset=self.io_mail, mail_bytes=self.links.mail_bytes)
        programs = {bucket: self.program(bucket) for bucket in self.config.buckets}
        kv_bytes = [self.kv_size] * len(self.config.kv_channels)
        return Compiled(self.config, programs, self.lanes, kv_bytes, io, self.buffers, self.max_tile, self.layers)


def logits_values(module: Module) -> set[str]:
    """The matmul results that leave as logits (written to the io channel, not to a buffer)."""
    step = module.functions["step"]
    producers, users = step.producers(), step.users()
    names = {n.inputs[0].name for n in step.nodes if n.op == "hw_to_float"}
    for name in names:
        producer = producers.get(name)
        if producer is None or producer.op != "hw_matmul" or len(users[name]) != 1:
            raise LlmcError(f"{module.name}: logits must come straight from a linear layer (%{name})")
    return names


def _writes(node: Node, to_io: set[str]) -> bool | None:
    """Whether the instruction of ``node`` writes an activation buffer; None: it has none."""
    if node.op in ("param", "concat", "hw_to_float"):
        return None
    if node.op in ("hw_quant8", "hw_send"):
        return False  # appends to the KV cache; writes io
    return node.outputs[0].name not in to_io


def allocate_buffers(step: Function, to_io: set[str]) -> tuple[dict[str, int], int]:
    """On-chip activation buffers by liveness: the buffer each instruction writes (never one of
    its operands': an engine may still read a row it has already written), and how many."""
    last_use = {v.name: i for i, node in enumerate(step.nodes) for v in node.inputs}
    buffer_of: dict[str, int] = {}
    free: list[int] = []
    count = 0
    for i, node in enumerate(step.nodes):
        writes = _writes(node, to_io)
        if writes is None:
            continue
        ins = [v for v in node.inputs if v.name in buffer_of]
        if writes:
            if free:
                free.sort()
                buffer_of[node.outputs[0].name] = free.pop(0)
            else:
                buffer_of[node.outputs[0].name], count = count, count + 1
        free += [buffer_of[v.name] for v in ins if last_use.get(v.name) == i]
    return buffer_of, count


def activation_buffers(module: Module) -> int:
    """How many activation buffers the programs of a lowered module need."""
    return max(allocate_buffers(module.functions["step"], logits_values(module))[1], 1)


def _pad_rows(x: np.ndarray | None, rows: slice, count: int) -> np.ndarray | None:
    """Rows ``rows`` of ``x`` padded with zeros to ``count`` rows (the last tile of a layer)."""
    if x is None:
        return None
    out = np.zeros((count,) + x.shape[1:], dtype=x.dtype)
    out[: rows.stop - rows.start] = x[rows]
    return out


def compile_step(module: Module, config: AcceleratorConfig, with_data: bool = True,
                 links: Links | None = None) -> Compiled:
    """Programs, weight channels and memory map of a lowered module (``with_data`` False: the
    channels' sizes without their bytes, as for a shapes-only module); ``links`` for a card of a
    cluster."""
    if "step" not in module.functions:
        raise LlmcError(f"{module.name}: not lowered for the accelerator (no step function)")
    return Compiler(module, config, with_data, links).run()
