"""The LUT kernel variants (lut_isa.py): each one's results, its instructions, and the choice by features.

x86 variants this CPU can execute run here natively (AVX2 compiled for Zen 3, so without AVX-512
even on an AVX-512 host; the portable one for the x86-64 baseline); the ARM NEON ones are
cross-compiled for aarch64 and run under qemu-aarch64. Every variant is also compiled for a CPU
that has it and its assembly checked for the instructions it stands for, on any host.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_lut_kernels import make_weights, reference_lut

pytest.importorskip("tvm")

import tvm  # noqa: E402

import llmc.ir.ops  # noqa: E402, F401  (registers the ops)
from llmc.backends.tvm.build import build_lut_gemv, cpu_target, host_target, kernel_func  # noqa: E402
from llmc.backends.tvm.cross import aarch64_target, cross_compile  # noqa: E402
from llmc.backends.tvm.lut_isa import BY_NAME, VARIANTS, choose  # noqa: E402
from llmc.backends.tvm.pack import Geometry, pack_for_tvm  # noqa: E402
from llmc.errors import LlmcError  # noqa: E402
from llmc.ir.registry import OPS, RefContext  # noqa: E402

# variant: (the target of a CPU that has it, instructions the int8-table and float-table kernels must hold)
COMPILED_FOR = {
    "avx512": (lambda: cpu_target("icelake-server"), {"lut_int8": ("vpermb", "vpdpbusd"), "lut_f32": ("vpermps",)}),
    "avx2": (lambda: cpu_target("znver3"), {"lut_int8": ("vpshufb", "vpmaddubsw", "vpmaddwd"),
                                            "lut_f32": ("vperm", "vblendvps")}),
    "neon-dotprod": (lambda: aarch64_target(("+neon", "+dotprod")), {"lut_int8": ("tbl", "sdot"), "lut_f32": ("tbl",)}),
    "neon": (lambda: aarch64_target(("+neon",)), {"lut_int8": ("tbl", "saddlp"), "lut_f32": ("tbl",)}),
    "portable": (lambda: cpu_target("x86-64"), {"lut_int8": (), "lut_f32": ()}),
}
NATIVE_CPU = {"avx512": None, "avx2": "znver3", "portable": "x86-64"}
NATIVE = [name for name in NATIVE_CPU if BY_NAME[name].applies(host_target())]  # what this CPU executes
CASES = [((35, 200, 40), 3, 2), ((33, 202, 0), 2, 1), ((21, 128, 128), 4, 3)]  # (n, k, group), bits, batch


def interpreter_lut(x: np.ndarray, planes: np.ndarray, scales: np.ndarray, zeros: np.ndarray, group: int) -> np.ndarray:
    """The IR's ``lut_precompute`` + ``lut_gemm`` (float tables) on the docs/lut.md arrays."""
    context = RefContext(env={})
    tables, scale, sums = OPS["lut_precompute"].ref([x], {"g": 4, "symmetric": True, "table_bits": 0}, context)
    attrs = {"bits": planes.shape[0], "g": 4, "group": group, "symmetric": True}
    return OPS["lut_gemm"].ref([tables, scale, sums, planes, scales, zeros.astype(np.int32)], attrs, context)[0]


def check(y: np.ndarray, x: np.ndarray, planes, scales, zeros, k: int, group: int, table: str) -> None:
    expect = reference_lut(x, planes, scales, zeros, k, group, table)
    np.testing.assert_allclose(y, expect, rtol=1e-4, atol=1e-4 * np.abs(expect).max())
    if table == "f32":
        ir = interpreter_lut(x, planes, scales, zeros, group)
        np.testing.assert_allclose(y, ir, rtol=1e-5, atol=1e-5 * np.abs(ir).max())


@pytest.mark.parametrize("name", NATIVE)
@pytest.mark.parametrize("table", ["f32", "int8"])
def test_native_variant_matches_the_reference_and_the_interpreter(name: str, table: str) -> None:
    for (n, k, group), bits, batch in CASES:
        rng = np.random.default_rng(bits * 10 + batch)
        kernel = build_lut_gemv(n, k, bits, group, batch, table, variant=name, cpu=NATIVE_CPU[name])
        _, planes, scales, zeros, _ = make_weights(n, k, bits, group, rng)
        x = rng.standard_normal((batch, k)).astype(np.float32)
        check(kernel(x, *kernel.pack(planes, scales, zeros)), x, planes, scales, zeros, k, group, table)
        if table == "f32":  # exact on integer activations and power-of-two scales, as the reference
            _, planes, scales, zeros, _ = make_weights(n, k, bits, group, rng, pow2_scales=True)
            whole = rng.integers(-8, 9, size=(batch, k)).astype(np.float32)
            y = kernel(whole, *kernel.pack(planes, scales, zeros))
            np.testing.assert_array_equal(y, reference_lut(whole, planes, scales, zeros, k, group, "f32"))


@pytest.mark.parametrize("name", ["neon-dotprod", "neon"])
@pytest.mark.parametrize("table", ["f32", "int8"])
def test_neon_variant_under_qemu(name: str, table: str, tmp_path) -> None:
    target = COMPILED_FOR[name][0]()
    assert choose(target).name == name
    for index, ((n, k, group), bits, batch) in enumerate(CASES[:2]):
        rng = np.random.default_rng(bits * 10 + batch)
        _, planes, scales, zeros, _ = make_weights(n, k, bits, group, rng)
        geom, layout = Geometry(n, k, bits, group), f"lut_{table}"
        kernel = cross_compile(kernel_func(layout, geom, batch, BY_NAME[name]), target, tmp_path / str(index))
        x = rng.standard_normal((batch, k)).astype(np.float32)
        (y,) = kernel(x, *pack_for_tvm(planes, scales, zeros, geom, layout))
        check(y[:, :n], x, planes, scales, zeros, k, group, table)


@pytest.mark.parametrize("name", [v.name for v in VARIANTS])
def test_each_variant_compiles_to_its_instructions(name: str) -> None:
    target, instructions = COMPILED_FOR[name]
    for layout, wanted in instructions.items():
        func = kernel_func(layout, Geometry(37, 200, 3, 40), 1, BY_NAME[name])
        assembly = tvm.compile(func, target=target()).mod.inspect_source("asm")
        assert all(f"\t{i}" in assembly for i in wanted), (layout, [i for i in wanted if f"\t{i}" not in assembly])


def test_the_choice_follows_the_features() -> None:
    assert choose(cpu_target("icelake-server")).name == "avx512"
    assert choose(cpu_target("znver3")).name == "avx2"
    assert choose(cpu_target("x86-64")).name == "portable"
    assert choose(aarch64_target(("+neon", "+dotprod"))).name == "neon-dotprod"
    assert choose(aarch64_target(("+neon",))).name == "neon"
    assert choose(host_target()).applies(host_target())
    with pytest.raises(LlmcError, match=r"the avx512 LUT kernels need .*; this CPU lacks avx512f, avx512bw, avx512vbmi, "
                                        r"avx512vnni: use --lut-variant auto$"):
        choose(cpu_target("znver3"), "avx512")
    with pytest.raises(LlmcError, match="the neon LUT kernels are for aarch64 CPUs, this one is x86: use --lut-variant auto"):
        choose(cpu_target("znver3"), "neon")
    with pytest.raises(LlmcError, match="unknown LUT kernel variant 'sse9'"):
        choose(host_target(), "sse9")
    with pytest.raises(LlmcError, match="LLVM knows no CPU 'pentium9'"):
        cpu_target("pentium9")
