"""Mixtures of experts on the accelerator: the router's choice on the SFU (``hw_route``), expert-indexed
matrix products that stream only the chosen experts (``XMM``), the experts compressed by the passes
(RTN, GPTQ and AWQ on each expert's routed tokens, N:M sparsity, LUT) and run on the matching engine,
and the timing model counting only the chosen experts' bytes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from zoo import FAMILIES, SMALL_PROMPT, shared_folder

import llmc
import llmc.compiler.passes  # noqa: F401  (registers the passes)
from llmc.backends.fpga.flow import compile_project, design
from llmc.backends.fpga.timing import TimingModel
from llmc.compiler.pipeline import PassContext, parse_pipeline, run_pipeline
from llmc.ir.ops import hw_math as hm
from llmc.ir.registry import OPS, RefContext
from llmc.sim.image import ProjectImage
from llmc.sim.ladder import verify_project

CTX = RefContext(env={})
W4 = "quantize{bits=4,group=32}"


def _ref(op: str, ins: list[np.ndarray], **attrs: object) -> np.ndarray:
    return OPS[op].ref(ins, OPS[op].with_defaults(attrs), CTX)[0]


@pytest.fixture(scope="module")
def mixtral() -> llmc.Model:
    return llmc.load("mixtral", config=FAMILIES["mixtral"])


def compressed(model: llmc.Model, recipe: str) -> tuple[llmc.ir.Module, dict]:
    context = PassContext()
    return run_pipeline(model.module, parse_pipeline(recipe), context), context.reports


@pytest.fixture(scope="module")
def mixtral_w4(mixtral: llmc.Model) -> llmc.Model:
    module, reports = compressed(mixtral, W4)
    model = llmc.Model(module, None)
    model.reports = reports
    return model


@pytest.fixture(scope="module")
def w4_project(tmp_path_factory: pytest.TempPathFactory, mixtral_w4: llmc.Model) -> Path:
    return shared_folder(tmp_path_factory, "moe-w4", lambda out: compile_project(mixtral_w4.module, "u280", out))


def test_route_picks_the_largest_logits_with_softmax_weights() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, (50, 8)).astype(np.float32)
    x = hm.to_fixed(logits * np.float32(1 << 16))
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    top = np.argsort(-p, axis=1, kind="stable")[:, :2]
    for normalize in (False, True):
        route = _ref("hw_route", [x], top_k=2, normalize=normalize)
        np.testing.assert_array_equal(route[:, 0::2], top)
        want = np.take_along_axis(p, top, axis=1)
        want = want / want.sum(axis=1, keepdims=True) if normalize else want
        np.testing.assert_allclose(route[:, 1::2] / 2.0**16, want, atol=2e-4)


def test_expert_matmul_is_each_row_through_its_expert() -> None:
    rng = np.random.default_rng(1)
    x = rng.integers(-(1 << 20), 1 << 20, (9, 16)).astype(np.int32)
    codes = rng.integers(-7, 8, (3, 8, 16)).astype(np.int8)
    scales = rng.integers(1, 1 << 10, (3, 8, 2)).astype(np.int32)
    route = np.zeros((9, 4), dtype=np.int32)
    route[:, 2] = [2, 0, 2, 1, 1, 0, 2, 2, 0]  # slot 1
    attrs = {"group": 8, "shift": 12, "scale_bits": 20}
    got = _ref("hw_expert_matmul", [x, route, codes, scales], slot=1, **attrs)
    for t, e in enumerate(route[:, 2]):
        np.testing.assert_array_equal(got[t], _ref("hw_matmul", [x[t:t + 1], codes[e], scales[e]], **attrs)[0])
    route[4, 2] = 3
    with pytest.raises(ValueError, match="expert 3 outside the 3 experts"):
        _ref("hw_expert_matmul", [x, route, codes, scales], slot=1, **attrs)
    weights = np.tile(np.int32([0, 1 << 15, 0, 3 << 14]), (9, 1))  # slot 0: 0.5, slot 1: 0.75
    np.testing.assert_array_equal(_ref("hw_weigh", [x, weights], slot=1), _ref("hw_mul", [x, np.full_like(x, 3 << 14)]))


def test_experts_are_quantized_per_expert(mixtral: llmc.Model, mixtral_w4: llmc.Model) -> None:
    from llmc.compiler.quant.grid import Grid, quantize_rtn

    source = mixtral.module
    name = "model.layers.0.mlp.experts.down_proj"
    codes, scales = (mixtral_w4.module.params[f"{name}.{part}"] for part in ("codes", "scales"))
    experts, n, k = source.params[name].type.static_shape()
    assert codes.type.static_shape() == (experts, n, k) and codes.type.dtype.bits == 4
    for e in range(experts):
        q = quantize_rtn(source.params[name].data[e].astype(np.float32), Grid(4, 32, True))
        np.testing.assert_array_equal(codes.data[e], q.codes)
        np.testing.assert_array_equal(scales.data[e], q.scales.astype(np.float16))
    assert mixtral_w4.reports["quantize"]["experts"] == {"projections": 4, "method": "rtn", "rounded_to_nearest": 0}


def test_gptq_rounds_each_expert_on_the_tokens_routed_to_it(mixtral: llmc.Model) -> None:
    from llmc.compiler.calibrate import collect, expert_key
    from llmc.compiler.quant.grid import Grid, quantize_rtn

    stats = collect(mixtral.module, None)
    name = "model.layers.1.mlp.experts.down_proj"
    routed = [stats[expert_key(name, e)].rows for e in range(4) if expert_key(name, e) in stats]
    assert len(routed) == 4 and sum(routed) == 2 * 32 * 128  # top-2 of every calibration token
    module, reports = compressed(mixtral, "quantize{bits=4,group=32,method=gptq}")
    assert reports["quantize"]["experts"] == {"projections": 4, "method": "gptq", "rounded_to_nearest": 0}
    codes, scales = module.params[f"{name}.codes"].data, module.params[f"{name}.scales"].data
    grid = Grid(4, 32, True)
    for e in range(4):
        w, x = mixtral.module.params[name].data[e], stats[expert_key(name, e)].samples
        gptq = (codes[e].astype(np.float32).reshape(64, 3, 32) * scales[e][:, :, None].astype(np.float32)).reshape(64, 96)
        rtn = quantize_rtn(w, grid).dequantize()
        assert np.linalg.norm(x @ (gptq - w).T) < np.linalg.norm(x @ (rtn - w).T)  # the routed tokens' output error


@pytest.mark.parametrize("recipe,engine,flags", [
    ("sparsify{pattern=2:4,method=sparsegpt},quantize{bits=4,group=32,method=awq}", "sparse", 0x42A14),  # bit 11: f16 scales
    ("quantize{bits=2,group=32},lut-mpgemm", "lut", 0xB62),
])
def test_compressed_experts_run_on_their_engine_bit_exact(mixtral: llmc.Model, recipe: str, engine: str, flags: int,
                                                          tmp_path: Path) -> None:
    module, reports = compressed(mixtral, recipe)
    if engine == "sparse":
        codes = module.params["model.layers.0.mlp.experts.gate_up_proj.codes"].data.reshape(4, 192, 16, 4)
        assert ((codes == 0).sum(axis=-1) >= 2).all()  # 2:4 in every expert
    else:
        assert reports["lut-mpgemm"]["moe_layers"] == 4  # prefill's and decode's
    compile_project(module, "u280", tmp_path / "p")
    program = (tmp_path / "p" / "program.txt").read_text()
    assert all(f"flags={flags}," in line for line in program.splitlines() if line.startswith("XMM"))
    results = verify_project(tmp_path / "p", SMALL_PROMPT, 4, levels=("interpreter", "iss", "csim"))
    assert [r.mismatches for r in results] == [0, 0, 0], [r.to_json() for r in results]


def test_quantized_experts_keep_their_codes_and_run_bit_exact(w4_project: Path) -> None:
    program = (w4_project / "program.txt").read_text()
    assert program.count("ROUTE ") >= 2 and "XMM " in program and "WEIGH " in program
    assert "experts=4" in program and "flags=2564" in program  # 4-bit signed codes on the DSP engine, f16 scales
    results = verify_project(w4_project, SMALL_PROMPT, 6, levels=("interpreter", "iss", "csim"))
    assert [r.mismatches for r in results] == [0, 0, 0], [r.to_json() for r in results]


def test_a_decode_step_streams_only_the_chosen_experts(w4_project: Path, mixtral_w4: llmc.Model) -> None:
    image = ProjectImage.load(w4_project)
    model = TimingModel.for_image(image)
    xmm = [i for i in image.programs[1] if i.op == "XMM"]
    lanes = len(image.config.weight_channels)
    for ins, chunk in zip(xmm, [i for i in image.programs[16] if i.op == "XMM"], strict=True):
        one_expert = -(-int(ins.fields["tiles"]) // lanes) * int(ins.fields["tile_bytes"])
        decode, prefill = model.cost(ins, 1, 10), model.cost(chunk, 7, 0)
        assert decode.hbm_bytes == int(ins.fields["tiles"]) * int(ins.fields["tile_bytes"])
        assert decode.memory_cycles == pytest.approx(one_expert / model.port_bytes_per_cycle)
        assert prefill.hbm_bytes == 4 * decode.hbm_bytes  # 7 rows: at most every one of the 4 experts, once
    assert len(xmm) == 2 * 2 * 3  # layers x slots x (gate, up, down)
    matrices = design(mixtral_w4.module, "u280").needs.matrices
    experts = [m for m in matrices if m.stored != 1]
    assert len(experts) == len(xmm) and sum(m.stored for m in experts) == 2 * 3 * 4  # each expert stored once
