"""Design-space exploration: the engine sizes and memory-channel plan of an accelerator for one model.

:func:`explore` enumerates designs for a :class:`ModelNeeds` on a :class:`~.target.Target`, drops those
over the resource budget and keeps the fastest by a simple decode model (:func:`estimate_decode`):
batch-1 decode streams every weight once per token, so a good design gives the weights as many
memory channels as it can and just enough MAC lanes that compute never dominates the stream.
:func:`check_fits` validates a configuration a user supplies.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from itertools import product
from math import ceil

from llmc.backends.fpga import pack
from llmc.errors import LlmcError
from llmc.sizes import human_bytes

from .design import PORT_WIDTHS, AcceleratorConfig, lanes_per_channel
from .resources import Utilisation, estimate
from .target import Target
from .timing import TimingModel

SPARSE_M = (4, 8, 16)  # N:M group sizes the sparse DSP chain selects from
ACT_BUFFERS = 4  # a typical decoder block's need: residual stream, normalised input, projection, MLP gate/up
LUT_G = 4  # activations per LUT-engine table
TIME_TOLERANCE = 0.01  # designs this close to the fastest count as equally fast
CLOCK_STEP_MHZ = 25  # the kernel clocks tried: the board's top clock and steps of this below it, down to half
COMPUTE_HEADROOM = 0.75  # a balanced design's MACs take at most this share of its weight stream
# engine sizes tried, largest first so that fast designs come early and slower ones are skipped
TILE_N = (128, 64, 32, 16)
TILE_K = (256, 128, 64, 32, 16)
SFU_LANES = (64, 32, 16, 8, 4)
LUT_LANES = (4096, 2048, 1024, 512, 256, 128, 64)
GIB = 2**30


@dataclass(frozen=True)
class Matrix:
    """One matrix instruction's layer as the weight lanes store it (for placing its tiles): a decode
    token streams one matrix of ``n`` rows; the lanes hold ``stored`` of them (a mixture of experts'
    first slot stores every expert, its later slots read the same ones: 0)."""

    n: int
    k: int
    engine: str
    bits: int
    groups: int
    has_zero: bool
    has_bias: bool
    sparse: tuple[int, int] | None
    stored: int = 1
    half_scales: bool = False
    has_min: bool = False

    def tile_bytes(self, tile_n: int) -> int:
        return pack.tile_layout(self.engine, self.bits, tile_n, self.k, self.groups, self.has_zero, self.has_bias,
                                self.sparse, self.half_scales, self.has_min)["size"]

    def lane_bytes(self, config: AcceleratorConfig) -> int:
        """What the busiest lane holds of one matrix: its tiles dealt round-robin, ``ceil(tiles / lanes)``."""
        return ceil(ceil(self.n / config.mm_tile_n) / config.mm_lanes) * self.tile_bytes(config.mm_tile_n)


@dataclass(frozen=True)
class ModelNeeds:
    """What a compiled model asks of the accelerator: its shape, weight formats and memory.

    ``weight_bits`` are the code widths of layers on the matrix engine (widths 5-8 run on its 8-bit
    datapath, 1-4 on the 4-bit one); ``lut_bits`` those of layers on the LUT engine (1-4 bits).
    ``sparse`` is an N:M pattern ``(n, m)`` or None. ``weight_bytes`` counts packed weights with their
    scales; ``kv_bytes_per_token`` the KV cache of one token over all layers; ``act_buffers`` the
    on-chip activation buffers its programs need (from the instruction compiler's allocation);
    ``matrices`` the linear layers, when known, so that the exploration places their tiles exactly.
    """

    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    max_context: int
    weight_bits: tuple[int, ...]
    sparse: tuple[int, int] | None
    lut_bits: tuple[int, ...]
    weight_bytes: int
    kv_bytes_per_token: int
    act_buffers: int = ACT_BUFFERS
    matrices: tuple[Matrix, ...] = ()

    def __post_init__(self) -> None:
        for name in ("layers", "hidden", "intermediate", "heads", "kv_heads", "head_dim", "max_context", "act_buffers"):
            _positive(f"ModelNeeds.{name}", getattr(self, name))
        if self.vocab < 0:  # embedding rows; 0 on a cluster's card that does not embed
            raise LlmcError(f"ModelNeeds.vocab must be 0 or more, got {self.vocab}")
        _positive("ModelNeeds.weight_bytes", self.weight_bytes)
        _positive("ModelNeeds.kv_bytes_per_token", self.kv_bytes_per_token)
        if self.heads % self.kv_heads:
            raise LlmcError(f"ModelNeeds.heads ({self.heads}) must be a multiple of kv_heads ({self.kv_heads})")
        _check_widths("ModelNeeds.weight_bits", self.weight_bits, 8)
        _check_widths("ModelNeeds.lut_bits", self.lut_bits, 4)
        if not self.weight_bits and not self.lut_bits:
            raise LlmcError("ModelNeeds: weight_bits and lut_bits are both empty")
        if self.sparse is not None:
            _check_sparse("ModelNeeds.sparse", *self.sparse)

    @property
    def kv_bytes(self) -> int:
        """The KV cache at ``max_context`` tokens."""
        return self.max_context * self.kv_bytes_per_token

    @property
    def macs_per_token(self) -> int:
        """Multiply-accumulates of the linear layers for one decode token (gated MLP: three matrices)."""
        attn = self.hidden * (self.heads + 2 * self.kv_heads) * self.head_dim + self.heads * self.head_dim * self.hidden
        return self.layers * (attn + 3 * self.hidden * self.intermediate) + self.vocab * self.hidden

    @property
    def attention_macs(self) -> int:
        """Multiply-accumulates of attention for one decode token at a full cache (scores and weighted sum)."""
        return self.layers * 2 * self.heads * self.head_dim * self.max_context

    @property
    def sfu_elements(self) -> int:
        """Elements the SFU touches for one decode token at a full cache.

        Per layer: two norms of two passes, two residual adds, RoPE on q and k, SiLU and the gate
        product, and a three-pass softmax over every head's scores; then the final norm and the logits.
        """
        rope = (self.heads + self.kv_heads) * self.head_dim
        softmax = 3 * self.heads * self.max_context
        per_layer = 6 * self.hidden + rope + 2 * self.intermediate + softmax
        return self.layers * per_layer + 2 * self.hidden + self.vocab


@dataclass(frozen=True)
class DecodeEstimate:
    """Modelled time of one decode token, in seconds, by what bounds it."""

    weights_s: float  # streaming every weight over the weight channels
    compute_s: float  # the matrix (and LUT) engine's MACs
    kv_s: float  # attention at half the context (a full run's average): the cache stream or its MACs on the lanes
    sfu_s: float  # special functions
    fill_s: float = 0.0  # every linear layer's first tile, loaded before its lanes start

    @property
    def total_s(self) -> float:
        """Weight streaming overlaps the MACs; first tiles, attention and special functions follow them."""
        return max(self.weights_s, self.compute_s) + self.fill_s + self.kv_s + self.sfu_s

    @property
    def balanced(self) -> bool:
        """Whether compute keeps up with the weight stream, with ``COMPUTE_HEADROOM`` to spare (a
        layer's last tile computes after the stream ends, and prefill is compute bound)."""
        return self.compute_s <= COMPUTE_HEADROOM * self.weights_s


def estimate_decode(config: AcceleratorConfig, target: Target, needs: ModelNeeds) -> DecodeEstimate:
    """Model one decode token of ``needs`` on ``config``.

    With ``matrices``, each layer's compute is :func:`matrix_cycles` on its own engine. Without them,
    a lane does ``mm_tile_k`` MACs per cycle on every engine (the sparse chain and the LUT unit take
    ``mm_tile_k`` activations a beat, zeros included). Each linear layer waits for its first tile (the
    kernel's loaders read some of them ahead; charging all of it keeps tiles small). Attention streams
    the cache at half the context, or is bound by its MACs on the lanes. Each port streams at the memory
    model's rate (:func:`lane_gbs`).
    """
    hz = config.clock_mhz * 1e6
    lane = lane_gbs(config, target) * 1e9  # what one lane's port streams
    if needs.matrices:
        compute = sum(matrix_cycles(config, m) for m in needs.matrices) / hz
    else:
        compute = needs.macs_per_token / (config.mm_lanes * config.mm_tile_k * hz)
    return DecodeEstimate(
        weights_s=lane_stream_bytes(config, needs) / lane,
        compute_s=compute,
        kv_s=max(needs.kv_bytes / 2 / (len(config.kv_channels) * lane),
                 needs.attention_macs / 2 / (config.mm_lanes * config.mm_tile_k * hz)),
        sfu_s=needs.sfu_elements / (config.sfu_lanes * hz),
        fill_s=first_tile_bytes(config, needs) / lane,
    )


def lane_gbs(config: AcceleratorConfig, target: Target) -> float:
    """GB/s one lane's port streams sequentially: the memory model's rate (:mod:`llmc.backends.fpga.memory`)."""
    timing = TimingModel.for_design(config, target)
    return timing.port_bytes_per_cycle * timing.hz / 1e9


def matrix_cycles(config: AcceleratorConfig, m: Matrix) -> float:
    """Cycles the busiest lane computes one decode row of ``m`` on its engine, as the kernel's lanes do (the
    timing model's first order): per column of its tiles, one cycle per chunk of ``mm_tile_k`` codes that fit
    a 512-bit word on the MAC array, or per beat of ``mm_tile_k`` activations on the lane's sparse chain or
    LUT unit (which do not skip the zeros' cycles)."""
    lane_tiles = ceil(ceil(m.n / config.mm_tile_n) / config.mm_lanes)
    width = config.mac_chunk(m.bits) if m.engine == "dsp" else config.mm_tile_k
    return lane_tiles * config.mm_tile_n * ceil(m.k / width)


def first_tile_bytes(config: AcceleratorConfig, needs: ModelNeeds) -> int:
    """The first tiles of every linear layer of a decode step (without ``matrices``: 7 per block at
    the widest code and the logits)."""
    if needs.matrices:
        return sum(m.tile_bytes(config.mm_tile_n) for m in needs.matrices)
    widest = max((*needs.weight_bits, *needs.lut_bits))
    return (7 * needs.layers + 1) * ceil(config.mm_tile_n * needs.hidden * widest / 8)


SHORTLIST = 12  # designs the timing model ranks, the fastest by the first-order estimate
WEIGHT_HEADROOM = 1.03  # tile padding and the embedding table's row striping


def explore(
    target: Target, needs: ModelNeeds, *, clock_mhz: float | None = None, max_rows: int = 64, budget: float = 0.8,
    decode_time: Callable[[AcceleratorConfig], float] | None = None,
    run_time: Callable[[AcceleratorConfig], float] | None = None,
) -> tuple[AcceleratorConfig, Utilisation]:
    """Choose the accelerator for ``needs`` on ``target`` within ``budget`` of every usable resource.

    Enumerates matrix lanes (on as many memory channels, or, where the board's channels need more than one
    port to reach their peak, up to ``ports_per_channel`` lanes a channel), KV channel plans, tile sizes,
    LUT lanes (when the model has LUT layers) and SFU lanes. Among designs within ``TIME_TOLERANCE``
    of the fastest decode, it prefers those whose compute keeps up with the weight stream, then the
    smallest (lowest peak fraction, then lowest sum of fractions). With ``decode_time`` (a decode
    step's seconds from the timing model over the design's compiled program), the ``SHORTLIST``
    designs :func:`estimate_decode` finds fastest are ranked by it instead: the figure the design
    reports is the one it was chosen by. Channels: weights on
    ``0..mm_lanes / per channel - 1`` (lanes ``p * i .. p * i + p - 1`` on channel ``i``); the KV cache striped over those same channels (a decode step streams weights
    and cache at different times, so every channel serves both) or over channels of its own after
    them; io next; the program in DDR[0], or on the io channel when the board has no DDR. A model
    with only LUT layers keeps the 8-bit matrix datapath for attention.
    """
    if not 0 < budget <= 1:
        raise LlmcError(f"explore: budget must be in (0, 1], got {budget}")
    if max_rows < 1:
        raise LlmcError(f"explore: max_rows must be a positive integer, got {max_rows}")
    clock = target.clock_mhz if clock_mhz is None else clock_mhz
    if clock <= 0:
        raise LlmcError(f"explore: clock_mhz must be positive, got {clock}")
    kind = target.memory.kind.upper()
    if needs.weight_bytes + needs.kv_bytes > target.memory_bytes:
        raise LlmcError(
            f"model needs {human_bytes(needs.weight_bytes + needs.kv_bytes)} of {kind} (weights "
            f"{human_bytes(needs.weight_bytes)} + KV cache {human_bytes(needs.kv_bytes)} at {needs.max_context} "
            f"tokens); {target.name} has {human_bytes(target.memory_bytes)}"
        )
    base = dict(
        target=target.name,
        clock_mhz=clock,
        weight_bits=tuple(sorted(set(needs.weight_bits), reverse=True)) or (8,),
        sparse_n=needs.sparse[0] if needs.sparse else 0,
        sparse_m=needs.sparse[1] if needs.sparse else 0,
        lut_g=LUT_G,
        lut_bits=tuple(sorted(set(needs.lut_bits), reverse=True)),
        max_rows=max_rows,
        max_hidden=max(needs.hidden, needs.intermediate, needs.heads * needs.head_dim),
        max_head_dim=needs.head_dim,
        max_context=needs.max_context,
        act_buffers=needs.act_buffers,
        buckets=tuple(sorted({b for b in (1, 16, max_rows) if b <= max_rows})),
    )
    lut_lanes = LUT_LANES if needs.lut_bits else (0,)
    fitting: list[tuple[DecodeEstimate, Utilisation, AcceleratorConfig]] = []
    fastest = float("inf")
    closest: Utilisation | None = None
    for (lanes, kv, shared), per, tile_n, tile_k, lut, sfu in product(
        _channel_plans(target, needs), range(1, target.memory.ports_per_channel + 1), TILE_N, TILE_K, lut_lanes,
        SFU_LANES
    ):
        weights = tuple(c for c in range(lanes) for _ in range(per))
        io = min(lanes, target.memory.channels - 1) if shared else lanes + kv  # io shares the last lane at full width
        config = AcceleratorConfig(
            **base,
            mm_lanes=lanes * per,
            mm_tile_n=tile_n,
            mm_tile_k=tile_k,
            lut_lanes=lut,
            sfu_lanes=sfu,
            weight_channels=weights,
            kv_channels=tuple(range(lanes)) if shared else tuple(range(lanes, io)),
            io_channel=io,
            program_memory=target.ddr.bank_format.format(0) if target.ddr.banks else target.memory.bank_format.format(io),
            memory_bank=target.memory.bank_format,
        )
        if channel_bytes_needed(config, needs) > target.memory.channel_bytes:
            continue  # its lanes' tiles (and its share of the cache) do not fit a channel
        decode = estimate_decode(config, target, needs)
        if decode_time is None and decode.total_s > fastest * (1 + TIME_TOLERANCE):
            continue  # slower than a design that fits: never chosen
        used = estimate(config, target)
        if used.fits(budget):
            fitting.append((decode, used, config))
            fastest = min(fastest, decode.total_s)
        elif closest is None or used.scarcest()[1] < closest.scarcest()[1]:
            closest = used
    if not fitting and closest is None:
        raise LlmcError(f"{target.name}: the model's weight tiles do not fit {target.memory.channel_bytes / GIB:.2f} "
                        "GiB per weight channel with any lane count and tile size")
    if not fitting:
        assert closest is not None
        name, fraction = closest.scarcest()
        hint = " (activation buffers hold max_rows x max_hidden: lower max_rows)" if name == "uram" else ""
        raise LlmcError(
            f"no accelerator configuration fits {budget:.0%} of {target.name}'s usable resources: the smallest "
            f"needs {getattr(closest.total, name):,} {name} ({fraction:.0%} of {getattr(closest.usable, name):,}){hint}"
        )
    if decode_time is None:
        near = [f for f in fitting if f[0].total_s <= fastest * (1 + TIME_TOLERANCE)]
    else:
        timed = [(decode_time(f[2]), f) for f in sorted(fitting, key=lambda f: f[0].total_s)[:SHORTLIST]]
        best = min(t for t, _ in timed)
        near = [f for t, f in timed if t <= best * (1 + TIME_TOLERANCE)]
    _, used, config = min(
        near, key=lambda f: (not f[0].balanced, f[1].scarcest()[1], sum(f[1].fractions.values()), f[0].total_s)
    )
    config, used = fastest_kv_group(config, target, needs, budget)
    return port_and_clock(config, target, needs, budget, run_time, vary_clock=clock_mhz is None)


def port_and_clock(config: AcceleratorConfig, target: Target, needs: ModelNeeds, budget: float,
                   run_time: Callable[[AcceleratorConfig], float] | None, *,
                   vary_clock: bool = True) -> tuple[AcceleratorConfig, Utilisation]:
    """``config`` with a port width (``PORT_WIDTHS``) and kernel clock (the board's top clock and ``CLOCK_STEP_MHZ``
    steps below it, down to half; only the design's own without ``vary_clock``). Among those whose run (``run_time``:
    the timing model's prompt and generated tokens; else a decode step of :func:`estimate_decode`) is within
    ``TIME_TOLERANCE`` of the fastest: a balanced one (compute keeps up with the weight stream), then the lowest
    clock, the fewest resources and the narrowest port. That is the slowest clock and narrowest ports that keep the
    board's channels as busy and the prompt as fast: a lower clock closes timing more easily."""
    clocks = clock_candidates(config.clock_mhz) if vary_clock else [config.clock_mhz]
    timed = []
    for bits, clock in product(PORT_WIDTHS, clocks):
        trial = replace(config, port_bits=bits, clock_mhz=clock)
        used = estimate(trial, target)
        if used.fits(budget):
            first_order = estimate_decode(trial, target, needs)
            seconds = run_time(trial) if run_time else first_order.total_s
            timed.append((seconds, not first_order.balanced, trial, used))
    if not timed:
        return config, estimate(config, target)
    best = min(t[0] for t in timed)
    _, _, config, used = min((t for t in timed if t[0] <= best * (1 + TIME_TOLERANCE)),
                             key=lambda t: (t[1], t[2].clock_mhz, t[3].scarcest()[1], t[2].port_bits))
    return config, used


def clock_candidates(top: float) -> list[float]:
    """The kernel clocks the exploration tries: ``top`` (the board's) and ``CLOCK_STEP_MHZ`` steps below it, down to
    half of it."""
    return [top - CLOCK_STEP_MHZ * i for i in range(int(top / 2 // CLOCK_STEP_MHZ) + 1)]


def fastest_kv_group(config: AcceleratorConfig, target: Target, needs: ModelNeeds,
                     budget: float) -> tuple[AcceleratorConfig, Utilisation]:
    """``config`` with attention loading the KV heads in the groups (a divisor of ``kv_heads``, ping-pong
    buffered within ``budget`` of the resources) whose decode step at half the context the timing model times
    fastest; the wider group on a tie. Wider groups read the cache in longer transactions, more groups overlap
    one group's scores with the next group's loads."""
    fields = {"heads": needs.heads, "kv_heads": needs.kv_heads, "head_dim": needs.head_dim, "window": 0}
    best = config, estimate(config, target)
    best_cycles = TimingModel.for_design(config, target)._attention(fields, 1, needs.max_context // 2).cycles
    for group in (g for g in range(2, needs.kv_heads + 1) if needs.kv_heads % g == 0):
        trial = replace(config, kv_group=group)
        used = estimate(trial, target)
        cycles = TimingModel.for_design(trial, target)._attention(fields, 1, needs.max_context // 2).cycles
        if used.fits(budget) and cycles <= best_cycles:
            best, best_cycles = (trial, used), cycles
    return best


def check_fits(config: AcceleratorConfig, target: Target, *, budget: float = 1.0) -> Utilisation:
    """Check a user-supplied ``config`` against ``target``: formats, channels and resources."""
    where = "accelerator config"
    if config.target != target.name:
        raise LlmcError(f"{where}: target is '{config.target}', not '{target.name}'")
    _check_widths(f"{where}: weight_bits", config.weight_bits, 8)
    _check_widths(f"{where}: lut_bits", config.lut_bits, 4)
    if config.sparse_m or config.sparse_n:
        _check_sparse(f"{where}: sparse_n:sparse_m", config.sparse_n, config.sparse_m)
    if len(config.weight_channels) != config.mm_lanes:
        raise LlmcError(
            f"{where}: weight_channels has {len(config.weight_channels)} entries for {config.mm_lanes} mm_lanes"
        )
    channels = [*config.weight_channels, *config.kv_channels, config.io_channel]
    outside = [c for c in channels if not 0 <= c < target.memory.channels]
    if outside:
        raise LlmcError(f"{where}: channel {outside[0]} is outside {target.name}'s {target.memory.channels} channels")
    if config.port_bits not in PORT_WIDTHS:
        raise LlmcError(f"{where}: port_bits {config.port_bits} is not one of {', '.join(map(str, PORT_WIDTHS))}")
    if lanes_per_channel(config) > target.memory.ports_per_channel:
        raise LlmcError(f"{where}: {lanes_per_channel(config)} weight lanes on one channel; {target.name}'s "
                        f"channels serve {target.memory.ports_per_channel} port(s) each")
    kv_only = set(config.kv_channels) - set(config.weight_channels)
    distinct = [*set(config.weight_channels), *kv_only]
    if config.io_channel not in config.weight_channels:
        distinct.append(config.io_channel)
    if len(set(distinct)) != len(distinct) or len(set(config.kv_channels)) != len(config.kv_channels):
        raise LlmcError(f"{where}: a memory channel is assigned twice (weight_channels, kv_channels, io_channel; "
                        "only the KV cache and io may share the weight channels)")
    if config.program_memory == target.ddr.bank_format.format(0) and not target.ddr.banks:
        raise LlmcError(f"{where}: program_memory is {config.program_memory} but {target.name} has no DDR")
    used = estimate(config, target)
    if not used.fits(budget):
        name, fraction = used.scarcest()
        raise LlmcError(
            f"{where} does not fit {budget:.0%} of {target.name}: {name} {getattr(used.total, name):,} "
            f"of {getattr(used.usable, name):,} usable ({fraction:.0%})"
        )
    return used


def lane_stream_bytes(config: AcceleratorConfig, needs: ModelNeeds) -> float:
    """What the busiest weight lane streams per decode token: every layer's tiles dealt round-robin
    (``ceil(tiles / lanes)`` each); without ``matrices``, an even share of the weights."""
    if not needs.matrices:
        return needs.weight_bytes / config.mm_lanes
    return sum(m.lane_bytes(config) for m in needs.matrices)


def channel_bytes_needed(config: AcceleratorConfig, needs: ModelNeeds) -> int:
    """What the fullest weight channel holds: its lanes' tiles (each layer reserves the same span on every
    lane), their share of the embedding rows and, when the cache shares the lanes' channels, its stripe of the
    KV cache; without ``matrices``, an even share of the weights with headroom."""
    if needs.matrices:
        weights = sum(m.stored * m.lane_bytes(config) for m in needs.matrices) + ceil(needs.vocab / config.mm_lanes) * pack.align(needs.hidden * 2)
    else:
        weights = ceil(needs.weight_bytes * WEIGHT_HEADROOM / config.mm_lanes)
    shared = set(config.kv_channels) & set(config.weight_channels)
    return lanes_per_channel(config) * weights + (kv_channel_bytes(config, needs) if shared else 0)


def kv_channel_bytes(config: AcceleratorConfig, needs: ModelNeeds) -> int:
    """What one KV channel holds: cache positions are dealt round-robin over the KV channels."""
    return ceil(needs.max_context / len(config.kv_channels)) * needs.kv_bytes_per_token


def _channel_plans(target: Target, needs: ModelNeeds) -> list[tuple[int, int, bool]]:
    """(weight lanes, KV channels, shared) plans that hold the model, largest first.

    Lanes are powers of two, the count the weights need, multiples of four above it, every channel
    but one and every channel. A shared plan stripes the KV cache over the lanes themselves (with
    every channel a lane, io shares the last one: it moves a few bytes before and after a run); the
    others give the cache channels of its own, from what it needs through the powers of two to every
    channel left, and io one more.
    """
    channels, size = target.memory.channels, target.memory.channel_bytes
    kv_min = ceil(needs.kv_bytes / size)
    need = max(1, ceil(needs.weight_bytes * WEIGHT_HEADROOM / size))
    need_shared = max(1, ceil((needs.weight_bytes * WEIGHT_HEADROOM + needs.kv_bytes) / size))
    candidates = ({2**i for i in range(channels.bit_length())} | {need, need_shared, channels - 1, channels}
                  | set(range(-(-need // 4) * 4, channels, 4)))
    plans = []
    for lanes in sorted(c for c in candidates if c <= channels):
        if lanes >= need_shared:
            plans.append((lanes, lanes, True))
        if lanes >= need and lanes + kv_min + 1 <= channels:
            free = channels - 1 - lanes
            counts = {kv_min, free} | {2**i for i in range(free.bit_length()) if kv_min < 2**i < free}
            plans += [(lanes, kv, False) for kv in sorted(counts)]
    if not plans:
        raise LlmcError(
            f"{target.name} cannot place the model in its {target.memory.channels} channels of "
            f"{size / GIB:.2f} GiB: the weights ({needs.weight_bytes / GIB:.1f} GiB) need {need} channels, "
            f"the KV cache {kv_min} and io 1"
        )
    return plans[::-1]


def _positive(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise LlmcError(f"{name} must be a positive integer, got {value!r}")


def _check_widths(name: str, widths: tuple[int, ...], largest: int) -> None:
    bad = [w for w in widths if isinstance(w, bool) or not isinstance(w, int) or not 1 <= w <= largest]
    if bad:
        raise LlmcError(f"{name}: {bad[0]!r}-bit weights are not supported (widths 1-{largest})")


def _check_sparse(name: str, n: int, m: int) -> None:
    if m not in SPARSE_M or not 0 < n < m:
        raise LlmcError(f"{name}: pattern {n}:{m} is not supported (N:M with M in 4, 8, 16 and 0 < N < M)")
