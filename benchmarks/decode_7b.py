"""Modelled Llama-2-7B decode on the U280 and the V80 (batch 1) next to the HBM roofline and FlightLLM's 55 tokens/s.

Per configuration: ``llmc compile DIR --shapes-only -p PIPELINE --board BOARD`` on a folder holding
only Llama-2-7B's config.json, then the timing model over a 128-token prompt and 512 generated
tokens (``llmc simulate --timing-only``). ``roofline`` is the board's peak HBM bandwidth over the
bytes read per decode token; ``flightllm-like`` runs int8 weights with 2:4 sparsity (FlightLLM's
sparse DSP chain on int8 operands; the ~5.5 GB per token its two published figures imply) on
``flightllm_u280.yaml``: the U280 at FlightLLM's published 225 MHz kernel clock with the U280's measured
memory model, pinned there (``--clock-mhz 225``). The other rows take the clock and port width the exploration
chooses (the lowest clock and narrowest port within 1% of the fastest prompt-and-decode run). The error column
compares with FlightLLM's published 55 tokens/s.

    .venv/bin/python benchmarks/decode_7b.py [--prefill L] [--decode N] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import tempfile
from pathlib import Path

from compile_7b import LLAMA2_7B

from llmc.cli import main as llmc

FLIGHTLLM_TOKENS_PER_S = 55.0
HERE = Path(__file__).parent
CONFIGS = [  # name, pipeline, board, pinned clock (None: the exploration's)
    ("flightllm-like", "sparsify{pattern=2:4},quantize{bits=8,group=128}", str(HERE / "flightllm_u280.yaml"), 225),
    ("llmc W4g128", "quantize{bits=4,group=128}", "u280", None),
    ("llmc W4g128 + 2:4", "sparsify{pattern=2:4},quantize{bits=4,group=128}", "u280", None),
    ("llmc W2g128 LUT", "quantize{bits=2,group=128},lut-mpgemm", "u280", None),
    ("llmc W4g128 on the V80", "quantize{bits=4,group=128}", "v80", None),
]


def run_cli(args: list[str]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = llmc(args)
    if code:
        raise SystemExit(f"llmc {' '.join(args)} failed with exit code {code}")
    return out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prefill", type=int, default=128)
    parser.add_argument("--decode", type=int, default=512)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "llama-2-7b"
        model.mkdir()
        (model / "config.json").write_text(json.dumps(LLAMA2_7B))
        for name, pipeline, target, clock in CONFIGS:
            out = Path(tmp) / name.replace(" ", "_")
            pinned = ["--clock-mhz", str(clock)] if clock else []
            run_cli(["compile", str(model), "--shapes-only", "-p", pipeline, "--board", target, "-o", str(out),
                     *pinned])
            modelled = json.loads(run_cli(["simulate", str(out), "--timing-only", "--prefill", str(args.prefill),
                                           "--decode", str(args.decode), "--json"]))["modelled"]
            design = json.loads((out / "design.json").read_text())
            peak = design["target"]["memory"]["bandwidth_gbs"] * 1e9
            rows.append({"config": name, "pipeline": pipeline, "clock_mhz": design["config"]["clock_mhz"],
                         "port_bits": design["config"]["port_bits"],
                         "weight_lanes": design["config"]["mm_lanes"],
                         "kv_channels": len(design["config"]["kv_channels"]),
                         "gb_per_token": modelled["hbm_bytes_per_token"] / 1e9,
                         "tokens_per_s": modelled["decode_tokens_per_s"],
                         "roofline_tokens_per_s": peak / modelled["hbm_bytes_per_token"],
                         "hbm_utilisation": modelled["hbm_utilisation"],
                         "joules_per_token": modelled["joules_per_token"], "ttft_ms": modelled["ttft_ms"],
                         "vs_flightllm": modelled["decode_tokens_per_s"] / FLIGHTLLM_TOKENS_PER_S - 1})
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"Llama-2-7B batch 1, prompt {args.prefill}, {args.decode} generated tokens (modelled)")
    print(f"{'config':<24} {'MHz':>4} {'port':>4} {'lanes':>5} {'GB/tok':>7} {'tok/s':>6} {'roofline':>8} {'HBM':>6} "
          f"{'J/tok':>6} {'TTFT ms':>8} {'vs 55':>7}")
    for r in rows:
        print(f"{r['config']:<24} {r['clock_mhz']:>4.0f} {r['port_bits']:>4} {r['weight_lanes']:>5} {r['gb_per_token']:>7.2f} "
              f"{r['tokens_per_s']:>6.1f} {r['roofline_tokens_per_s']:>8.1f} {r['hbm_utilisation']:>6.1%} "
              f"{r['joules_per_token']:>6.2f} {r['ttft_ms']:>8.0f} {r['vs_flightllm']:>+7.0%}")


if __name__ == "__main__":
    main()
