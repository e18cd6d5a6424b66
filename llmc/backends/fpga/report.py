"""The human-readable project report (report.md) from the data of report.json."""

from __future__ import annotations

from llmc.backends.fpga.resources import Utilisation
from llmc.safe_text import comment


def _table(rows: list[list[str]]) -> str:
    head, *body = rows
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in body]) + "\n"


def render_report(report: dict, utilisation: Utilisation) -> str:
    c, d, n, size = report["config"], report["modelled_decode"], report["needs"], report["program_size"]
    gib = 2**30
    lines = [
        f"# {comment(report['name'])} on {comment(report['target'])}",
        "",
        f"Model: {n['layers']} layers, hidden {n['hidden']}, intermediate {n['intermediate']}, {n['heads']} heads "
        f"({n['kv_heads']} KV) of {n['head_dim']}, vocabulary {n['vocab']}, context {n['max_context']}.",
        f"Weights {n['weight_bytes'] / gib:.3f} GiB; KV cache {n['kv_bytes_per_token'] * n['max_context'] / gib:.3f} "
        f"GiB at {n['max_context']} tokens.",
        "",
        "## Design",
        f"{c['clock_mhz']:g} MHz; {c['port_bits']}-bit memory ports; matrix engine {c['mm_lanes']} lanes x {c['mm_tile_k']} MACs (tiles of "
        f"{c['mm_tile_n']} rows), widths {c['weight_bits']}, N:M {c['sparse_n']}:{c['sparse_m']}; LUT engine "
        f"{c['lut_lanes']} lanes (g={c['lut_g']}); SFU {c['sfu_lanes']} lanes; {c['act_buffers']} activation buffers "
        f"of {c['max_rows']} x {c['max_hidden']}; weights on HBM {c['weight_channels']}, KV cache on "
        f"{c['kv_channels']}, io on {c['io_channel']}; programs for buckets {c['buckets']}.",
        "",
        "## Resources (estimated)",
        _table(utilisation.table()),
        "## Modelled run (the timing model, as `llmc simulate --timing-only`)",
        f"{d['prefill_tokens']}-token prompt in {d['prefill_ms']:.3f} ms; {d['decode_tokens']} generated tokens at "
        f"{d['tokens_per_s']:.1f} tokens/s ({d['ms_per_token']:.3f} ms/token), {d['hbm_bytes_per_token'] / 2**20:.1f} MiB "
        f"of HBM per token at {d['hbm_utilisation']:.1%} of the board's peak.",
        "",
        "## Program",
        _table([["bucket", "bytes"], *([k, f"{v:,}"] for k, v in report["program_bytes"].items())]),
        f"{size['bytes']:,} B in all; one program per sequence length (1 to {n['max_context']}) would take at least "
        f"{size['one_per_length_bytes']:,} B: the buckets take {size['ratio']:.3%} of that.",
        "",
        *_accuracy(report["accuracy"]),
        "## Linear layers",
        "Tiles are dealt round-robin over the weight channels from the same offset on each.",
        "",
        _table([["layer", "N", "K", "bits", "engine", "sparse", "tiles", "bytes", "offset"],
                *([x["name"], str(x["n"]), str(x["k"]), str(x["bits"]), x["engine"], x["sparse"] or "-",
                   str(x["tiles"]), f"{x['bytes']:,}", f"0x{x['offset']:x}"] for x in report["layers"])]),
    ]
    return "\n".join(lines)


def _accuracy(a: dict) -> list[str]:
    lines = ["## Accuracy of lowering", ""]
    if not a["measured"]:
        return lines + [f"Not measured: {a['reason']}.", ""]
    p, g = a["perplexity"], a["greedy"]
    first = "" if g["first_difference"] is None else f" (first difference at token {g['first_difference']})"
    return lines + [
        f"The lowered program against the module it was lowered from, in the reference interpreter, on "
        f"{a['windows']} windows of 256 tokens of the corpus's test split ({a['tokens']:,} predicted tokens):",
        "",
        _table([["program", "perplexity"], ["unlowered", f"{p['unlowered']:.3f}"], ["lowered", f"{p['lowered']:.3f}"]]),
        f"Next-token predictions agree on {a['top1_agreement']:.2%} of the tokens. Greedy decoding from "
        f"\"{g['prompt']}\": {g['identical']} of {g['tokens']} tokens identical{first}.",
        "",
    ]
