"""Modelled batch-1 decode of models split over several U280s (docs/cluster.md).

Per model and split: a folder holding only the public config.json, ``llmc compile DIR
--shapes-only -p PIPELINE --cards N --parallel P --board u280 --context 4096``, then ``llmc
simulate OUT --timing-only`` (128 prompt + 256 generated tokens) over each link: ``host`` (PCIe
through XRT: what the generated hosts and kernels do) and ``qsfp`` (a QSFP28/Aurora ring,
modelled only). The one-card compile is listed first with llmc's refusal. Every figure is
modelled: no weights exist here.

    .venv/bin/python benchmarks/cluster.py [--only NAME] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import tempfile
import time
from pathlib import Path

from llmc.cli import main as llmc

LLAMA_2 = {"model_type": "llama", "vocab_size": 32000, "max_position_embeddings": 4096, "rms_norm_eps": 1e-5}
# name -> public config.json fields, pipeline, cards per split, rows per kernel call (70B's 28,672-wide
# activation buffers outgrow the URAM at 64 rows)
CASES = {
    "Llama-2-13B int8": ({**LLAMA_2, "hidden_size": 5120, "intermediate_size": 13824, "num_hidden_layers": 40,
                          "num_attention_heads": 40, "num_key_value_heads": 40}, "quantize{bits=8,group=128}",
                         [("pipeline", 2), ("tensor", 2)], 64),
    "Llama-2-70B W4g128": ({**LLAMA_2, "hidden_size": 8192, "intermediate_size": 28672, "num_hidden_layers": 80,
                            "num_attention_heads": 64, "num_key_value_heads": 8}, "quantize{bits=4,group=128}",
                           [("pipeline", 5), ("tensor", 5)], 32),
}


def run_cli(args: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = llmc(args)
    return code, out.getvalue(), err.getvalue().strip().removeprefix("llmc: error: ")


def measure(name: str, folder: Path) -> list[dict]:
    config, pipeline, cards_of, max_rows = CASES[name]
    model = folder / name.replace(" ", "_")
    model.mkdir()
    (model / "config.json").write_text(json.dumps(config))
    base = ["compile", str(model), "--shapes-only", "-p", pipeline, "--board", "u280", "--context", "4096",
            "--max-rows", str(max_rows)]
    code, _, err = run_cli([*base, "-o", str(folder / "one")])
    rows = [{"model": name, "cards": 1, "parallel": "-", "refused": err if code else ""}]
    for parallel, cards in cards_of:
        out = folder / f"{model.name}.{parallel}{cards}"
        start = time.perf_counter()
        code, _, err = run_cli([*base, "--cards", str(cards), "--parallel", parallel, "-o", str(out)])
        row: dict = {"model": name, "cards": cards, "parallel": parallel, "compile_s": time.perf_counter() - start}
        if code:
            rows.append({**row, "refused": err})
            continue
        code, text, err = run_cli(["simulate", str(out), "--timing-only", "--prefill", "128", "--decode", "256",
                                   "--json"])
        if code:
            rows.append({**row, "refused": err})
            continue
        manifest = json.loads((out / "cluster.json").read_text())
        runs = json.loads(text)["modelled"]
        rows.append({**row, "card_gib": [c["weight_bytes"] / 2**30 for c in manifest["cards"]],
                     "segments": manifest["segments"], "transfers": len(manifest["transfers"]),
                     **{f"{kind}_tokens_per_s": run["tokens_per_s"] for kind, run in runs.items()},
                     **{f"{kind}_link_share": run["link_share"] for kind, run in runs.items()}})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="one case name (default: all)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    names = [args.only] if args.only else list(CASES)
    rows = []
    for name in names:
        with tempfile.TemporaryDirectory() as tmp:
            rows += measure(name, Path(tmp))
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print("U280 cards, context 4096, prompt 128, 256 generated tokens (modelled)")
    print(f"{'model':<20} {'cards':>5} {'split':<9} {'weights/card GiB':<24} {'seg':>4} {'host tok/s':>10} "
          f"{'on link':>7} {'qsfp tok/s':>10} {'on link':>7}")
    for r in rows:
        if r.get("refused") or "host_tokens_per_s" not in r:
            print(f"{r['model']:<20} {r['cards']:>5} {r['parallel']:<9} refused: {r.get('refused') or 'fits'}")
            continue
        gib = " ".join(f"{g:.2f}" for g in r["card_gib"])
        print(f"{r['model']:<20} {r['cards']:>5} {r['parallel']:<9} {gib:<24} {r['segments']:>4} "
              f"{r['host_tokens_per_s']:>10.1f} {r['host_link_share']:>7.0%} {r['qsfp_tokens_per_s']:>10.1f} "
              f"{r['qsfp_link_share']:>7.0%}")


if __name__ == "__main__":
    main()
