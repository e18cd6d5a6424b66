"""``llmc compile MODEL --cards N --parallel pipeline|tensor``: a model split over N cards.

The lowered model is split (:mod:`.split`) into one module per card; each card gets its own
accelerator (explored, compiled and packed as a one-card design) and its program is cut into
the same number of **segments** by ``SYNC``. A run of the cluster runs segment 0 on every card,
moves what the cards sent (``SEND``) into the io of the cards that receive it (``RECV``), runs
segment 1, and so on: the host does this through XRT (the generated hosts and runtimes, and the
simulators, which stand in for the cards). The folder holds ``card0/`` .. ``cardN-1/`` (each a
project) and ``cluster.json``: the cards, the transfers after each segment and the modelled
figures.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmc.backends.fpga import pack
from llmc.backends.fpga.accuracy import lowering_accuracy
from llmc.backends.fpga.compile import Links
from llmc.backends.fpga.flow import Design, check_capacity, compiled_context, design_lowered, project_files
from llmc.backends.fpga.links import CLUSTER_FILE, LINKS, Transfer, cluster_runs
from llmc.backends.fpga.lower import lower
from llmc.backends.fpga.project import BUILD_PRODUCTS
from llmc.backends.fpga.split import split
from llmc.backends.fpga.target import Target, load_target
from llmc.backends.fpga.timing import TimingModel, run_lengths
from llmc.errors import LlmcError
from llmc.folders import check_output, write_folder
from llmc.ir.graph import Module
from llmc.manifest import MANIFEST, manifest_text

# What building the card projects makes inside a cluster folder (--force may replace these).
CLUSTER_PRODUCTS = tuple(f"card*/{p}" for p in BUILD_PRODUCTS) + tuple(f"card*/{p}/*" for p in BUILD_PRODUCTS)


@dataclass
class ClusterDesign:
    name: str
    target: Target
    parallel: str
    cards: list[Design]
    transfers: list[Transfer]
    segments: int


def link_schedule(cards: list[Module], max_rows: int) -> tuple[list[Links], list[Transfer], int]:
    """Each card's segments and mail offsets, the transfers, and the segment count.

    The cards are run as Kahn processes without data: a card's segment grows past each
    ``hw_recv`` to one after the segment its slot was sent in. Mail regions are reused once the
    last card has received what a region held (a slot sent later lands strictly after that)."""
    steps = [card.functions["step"].nodes for card in cards]
    at, segment = [0] * len(cards), [0] * len(cards)
    segment_of: list[dict[str, int]] = [{} for _ in cards]
    sent: dict[int, tuple[int, int, int]] = {}  # slot -> sender, segment, cols
    received: dict[int, list[tuple[int, int]]] = {}  # slot -> (card, segment)
    while any(at[c] < len(steps[c]) for c in range(len(cards))):
        moved = False
        for c, nodes in enumerate(steps):
            while at[c] < len(nodes):
                node = nodes[at[c]]
                if node.op == "hw_recv":
                    slot = node.attrs["slot"]
                    if slot not in sent:
                        break
                    segment[c] = max(segment[c], sent[slot][1] + 1)
                    received.setdefault(slot, []).append((c, segment[c]))
                if node.op == "hw_send":
                    sent[node.attrs["slot"]] = (c, segment[c], node.inputs[0].type.shape[1].value)
                segment_of[c][node.outputs[0].name] = segment[c]
                at[c] += 1
                moved = True
        if not moved:
            raise LlmcError("the cards' programs wait for values no card sends")
    count = max(segment) + 1
    regions: list[tuple[int, int, int]] = []  # offset, bytes, last segment it is read in
    transfers, mail = [], {}
    end = 0
    for slot in sorted(sent, key=lambda s: (sent[s][1], s)):
        sender, seg, cols = sent[slot]
        readers = received.get(slot, [])
        nbytes = pack.align(max_rows * cols * 4)
        last = max((r for _, r in readers), default=seg)
        free = next((i for i, (_, size, until) in enumerate(regions) if size == nbytes and until < seg), None)
        if free is None:
            regions.append((end, nbytes, last))
            offset, end = end, end + nbytes
        else:
            offset = regions[free][0]
            regions[free] = (offset, nbytes, last)
        mail[slot] = offset
        transfers.append(Transfer(slot, sender, tuple(sorted({c for c, _ in readers if c != sender})), seg, offset, cols))
    links = [Links(segment_of[c], count, mail, end) for c in range(len(cards))]
    return links, transfers, count


def cluster_design(module: Module, target: str, cards: int, parallel: str, *, name: str | None = None,
                   max_context: int | None = None, max_rows: int = 64, clock_mhz: float | None = None) -> ClusterDesign:
    """Lower ``module``, split it over ``cards`` boards of ``target`` and compile every card."""
    board = load_target(target)
    context = compiled_context(module, max_context)
    check_capacity(module, board, cards)
    card_modules = split(lower(module, context), cards, parallel)
    links, transfers, segments = link_schedule(card_modules, max_rows)
    name = name or module.name
    designs = []
    for c, card in enumerate(card_modules):
        try:
            designs.append(design_lowered(card, board, f"{name}.card{c}", context, max_rows, links[c],
                                          clock_mhz=clock_mhz))
        except LlmcError as e:
            raise LlmcError(f"card {c} of {cards}: {e}") from None
    return ClusterDesign(name, board, parallel, designs, transfers, segments)


def cluster_report(cd: ClusterDesign) -> dict[str, Any]:
    """The cluster manifest: cards, transfers and the modelled run on each kind of link."""
    prefill, decode = run_lengths(min(d.config.max_context for d in cd.cards))
    cards = [(TimingModel.for_design(d.config, d.target), d.compiled.programs) for d in cd.cards]
    runs = cluster_runs(cards, cd.transfers, cd.segments, LINKS, prefill, decode)
    return {"name": cd.name, "target": cd.target.name, "parallel": cd.parallel, "segments": cd.segments,
            "cards": [{"folder": f"card{c}", "name": d.name, "weight_bytes": d.needs.weight_bytes,
                       "layers": d.needs.layers, "logits": int(d.compiled.io["vocab"]) > 0}
                      for c, d in enumerate(cd.cards)],
            "transfers": [t.to_json() for t in cd.transfers],
            "links": {kind: link.to_json() for kind, link in LINKS.items()},
            "modelled": runs, "generated_link": "host"}


def cluster_files(cd: ClusterDesign, tokenizer_json: str | None, accuracy: dict[str, Any]) -> dict[str, bytes | str]:
    """Every file of the cluster folder: one project per card (with its own manifest) and the manifest."""
    files: dict[str, bytes | str] = {}
    for c, d in enumerate(cd.cards):
        card_files = project_files(d, tokenizer_json, accuracy)
        files.update({f"card{c}/{path}": data for path, data in card_files.items()})
        files[f"card{c}/{MANIFEST}"] = manifest_text(card_files, "project")
    files[CLUSTER_FILE] = json.dumps({**cluster_report(cd), "accuracy": accuracy}, indent=2, sort_keys=True) + "\n"
    return files


def compile_cluster(module: Module, target: str, out_dir: Path, cards: int, parallel: str, *,
                    tokenizer_json: str | None = None, force: bool = False, name: str | None = None,
                    max_context: int | None = None, eval_windows: int = 0, max_rows: int = 64,
                    clock_mhz: float | None = None) -> ClusterDesign:
    """Compile ``module`` for ``cards`` boards and write the cluster folder ``out_dir`` (all or
    nothing); ``eval_windows`` > 0 measures the cards, run as one cluster, against ``module``
    (:func:`.accuracy.lowering_accuracy`) into every card's report and cluster.json."""
    out_dir = Path(out_dir)
    check_output(out_dir, force=force, products=CLUSTER_PRODUCTS)
    cd = cluster_design(module, target, cards, parallel, name=name or out_dir.name, max_context=max_context,
                        max_rows=max_rows, clock_mhz=clock_mhz)
    accuracy = lowering_accuracy(module, [d.lowered for d in cd.cards], tokenizer_json, eval_windows,
                                 min(d.config.max_context for d in cd.cards))
    write_folder(out_dir, cluster_files(cd, tokenizer_json, accuracy), kind="cluster", force=force,
                 products=CLUSTER_PRODUCTS)
    return cd
