"""Seconds to compile Llama-2-7B for the U280 from its config.json alone, against the 30 s target.

Each recipe runs ``llmc compile DIR --board u280 --shapes-only -p PIPELINE -o OUT`` in a fresh
process pinned to two cores (Python start-up, imports and the import of the model included), on
a folder holding only Llama-2-7B's config.json; the table adds what the project says: programs
against one program per length, the scarcest resource and the modelled decode. Wall seconds
depend on what else the machine runs: the CPU seconds of the process and the load average are
printed with them.

    .venv/bin/python benchmarks/compile_7b.py [--cores N] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_S = 30.0
LLAMA2_7B = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008,
    "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32000,
    "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "bos_token_id": 1, "eos_token_id": 2,
    "tie_word_embeddings": False, "torch_dtype": "float16",
}
RECIPES = [
    ("W4g128", "quantize{bits=4,group=128}"),
    ("W4g128 + 2:4", "sparsify{pattern=2:4},quantize{bits=4,group=128}"),
    ("W2g128 LUT", "quantize{bits=2,group=128},lut-mpgemm"),
]


def compile_once(config_dir: Path, out: Path, pipeline: str, cores: set[int]) -> dict:
    llmc = Path(sys.executable).with_name("llmc")
    command = [str(llmc), "compile", str(config_dir), "--board", "u280", "--shapes-only", "-p", pipeline,
               "-o", str(out), "--json"]
    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, preexec_fn=lambda: os.sched_setaffinity(0, cores))
    seconds, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    if done.returncode:
        raise SystemExit(f"llmc compile failed: {done.stderr.strip().splitlines()[-1]}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    kind, fraction = max(report["resources"]["fractions"].items(), key=lambda kv: kv[1])
    return {"seconds": seconds, "cpu_seconds": cpu, "program_bytes": report["program_size"]["bytes"],
            "program_ratio": report["program_size"]["ratio"], "scarcest": kind, "scarcest_fraction": fraction,
            "weight_bytes": sum(report["weight_channel_bytes"]),
            "tokens_per_s": report["modelled_decode"]["tokens_per_s"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cores", type=int, default=2, help="cores the compiler may use (default 2)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    cores = set(sorted(os.sched_getaffinity(0))[:args.cores])
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        config_dir = Path(tmp) / "llama-2-7b"
        config_dir.mkdir()
        (config_dir / "config.json").write_text(json.dumps(LLAMA2_7B))
        for i, (name, pipeline) in enumerate(RECIPES):
            results[name] = {"pipeline": pipeline, **compile_once(config_dir, Path(tmp) / f"out{i}", pipeline, cores)}
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"Llama-2-7B from config.json, --shapes-only, U280, context 4096, {len(cores)} cores "
          f"(load average {os.getloadavg()[0]:.1f})")
    print(f"{'recipe':<14} {'seconds':>8} {'vs 30 s':>8} {'CPU s':>6} {'programs B':>11} {'vs per length':>14} "
          f"{'weights GiB':>12} {'scarcest':>14} {'tokens/s':>9}")
    for name, r in results.items():
        print(f"{name:<14} {r['seconds']:>8.1f} {r['seconds'] / TARGET_S:>8.2f} {r['cpu_seconds']:>6.1f} "
              f"{r['program_bytes']:>11,} "
              f"{r['program_ratio']:>14.3%} {r['weight_bytes'] / 2**30:>12.2f} "
              f"{r['scarcest'] + ' ' + format(r['scarcest_fraction'], '.1%'):>14} {r['tokens_per_s']:>9.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
