"""Accuracy of every compression recipe on the bundled model, in one table.

Held-out perplexity (test split, 256-token windows, the protocol of docs/tiny_model.md), true
bits per weight of the linear layers (codes, scales, zero points, sparse indices and outlier
side matrices all counted) and the time each recipe takes (compression + evaluation), all
measured in this run; the ratio column is perplexity against fp32 measured in the same run.

    .venv/bin/python benchmarks/accuracy.py [--windows N] [--json] [--write docs/results.md]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import llmc
import llmc.compiler.passes  # noqa: F401  (registers the passes)
from llmc.compiler.calibrate import CalibrationConfig
from llmc.compiler.evaluate import perplexity
from llmc.compiler.pipeline import PassContext, parse_pipeline, run_pipeline
from llmc.compiler.size import linear_storage

RECIPES: list[tuple[str, str]] = [
    ("fp32", ""),
    ("W8A8 SmoothQuant", "smoothquant{alpha=0.5},act-quant{wbits=8,abits=8}"),
    ("W4A8 (g128)", "act-quant{wbits=4,abits=8,group=128}"),
    ("W4g128 RTN", "quantize{bits=4,group=128,method=rtn}"),
    ("W4g128 GPTQ", "quantize{bits=4,group=128,method=gptq}"),
    ("W4g128 AWQ", "quantize{bits=4,group=128,method=awq}"),
    ("W3g128 RTN", "quantize{bits=3,group=128,method=rtn}"),
    ("W3g128 GPTQ", "quantize{bits=3,group=128,method=gptq}"),
    ("mixed 3.0 bpw", "mixed-precision{budget=3.0,group=128,method=gptq}"),
    ("mixed 2.5 bpw", "mixed-precision{budget=2.5,group=128,method=gptq}"),
    ("ternary (b1.58)", "quantize{method=ternary}"),
    ("2:4 magnitude", "sparsify{pattern=2:4,method=magnitude}"),
    ("2:4 Wanda", "sparsify{pattern=2:4,method=wanda}"),
    ("2:4 SparseGPT", "sparsify{pattern=2:4,method=sparsegpt}"),
    ("2:4 SparseGPT + W4g128 GPTQ", "sparsify{pattern=2:4,method=sparsegpt},quantize{bits=4,group=128,method=gptq}"),
    ("outliers 0.5% + W3g128 RTN", "outliers{fraction=0.005},quantize{bits=3,group=128,method=rtn}"),
    ("KV cache int8", "kv-quant{bits=8}"),
    ("KV cache int4", "kv-quant{bits=4}"),
]
BEGIN, END = "<!-- accuracy:begin -->", "<!-- accuracy:end -->"


def measure(model: llmc.Model, pipeline: str, windows: int | None, calibration: CalibrationConfig) -> dict:
    start = time.perf_counter()
    module = model.module
    if pipeline:
        context = PassContext(tokenizer_json=model.tokenizer_json, calibration_config=calibration)
        module = run_pipeline(module, parse_pipeline(pipeline), context)
    compress_s = time.perf_counter() - start
    result = perplexity(module, model.tokenizer_json, windows)
    return {"perplexity": result.perplexity, "bits_per_weight": linear_storage(module).bits_per_weight,
            "tokens": result.tokens, "compress_s": compress_s, "seconds": time.perf_counter() - start}


def table(rows: list[dict]) -> str:
    base = rows[0]["perplexity"]
    lines = ["| recipe | pipeline | perplexity | vs fp32 | bits/weight | compress s | total s |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['recipe']} | `{r['pipeline'] or '-'}` | {r['perplexity']:.3f} | {r['perplexity'] / base:.3f} | "
                     f"{r['bits_per_weight']:.3f} | {r['compress_s']:.1f} | {r['seconds']:.1f} |")
    return "\n".join(lines)


def write_section(path: Path, body: str) -> None:
    text = path.read_text() if path.exists() else ""
    block = f"{BEGIN}\n{body}\n{END}"
    if BEGIN in text:
        text = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    else:
        text += ("\n" if text else "") + block + "\n"
    path.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=None, help="first N test windows only (default: all)")
    parser.add_argument("--calib-samples", type=int, default=32)
    parser.add_argument("--only", default="", help="comma-separated recipe names to run (fp32 always runs)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--write", type=Path, help="replace the accuracy table in this markdown file")
    args = parser.parse_args()
    model = llmc.load("llmc-tiny")
    calibration = CalibrationConfig(samples=args.calib_samples, length=256)
    wanted = {s.strip() for s in args.only.split(",") if s.strip()}
    rows = []
    for name, pipeline in RECIPES:
        if wanted and name != "fp32" and name not in wanted:
            continue
        row = {"recipe": name, "pipeline": pipeline, **measure(model, pipeline, args.windows, calibration)}
        rows.append(row)
        print(f"{name:32s} ppl {row['perplexity']:8.3f}  bpw {row['bits_per_weight']:6.3f}  {row['seconds']:6.1f} s",
              file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(table(rows))
    if args.write:
        note = (f"Bundled model `llmc-tiny`, {rows[0]['tokens']} held-out tokens, calibration {args.calib_samples} x 256 "
                f"train tokens. Command: `.venv/bin/python benchmarks/accuracy.py --write {args.write}`.")
        write_section(args.write, note + "\n\n" + table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
