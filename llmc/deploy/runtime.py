"""The runtime of a deployed design: a prompt in, tokens out, on the card (PYNQ) or on the
instruction-set simulator, through the one generation loop.

A deployment is a folder with ``design.json``, ``program.bin``, ``weights.bin`` and the facts
the generation loop needs (:class:`Deployment`: token ids, tokenizer and xclbin files), or a
cluster's: ``cluster.json`` and one such design folder per card (:class:`ClusterDeployment`, run
on N cards or N simulators). ``llmc deploy`` writes one with a ``deploy.json`` and a ``run.py`` that
calls :func:`main`, and ``llmc run build/NAME --device`` reads a compiled project or cluster the
same way. Needs only NumPy, plus ``pynq`` for the cards.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TextIO

from llmc.backends.fpga.links import CLUSTER_FILE
from llmc.deploy.console import TextStream, add_generation_arguments, parse_ids, sampling_options
from llmc.deploy.pynq_cluster import PynqClusterDevice
from llmc.deploy.pynq_device import PynqDevice
from llmc.deploy.tokenizer import ByteLevelBPE, UnsupportedTokenizer
from llmc.errors import LlmcError
from llmc.generate.loop import ReportedTime, TimedDevice, generate_stream
from llmc.sim.cluster import ClusterImage, ClusterIssDevice
from llmc.sim.image import ProjectImage
from llmc.sim.iss import IssDevice

MANIFEST = "deploy.json"
FORMAT = 1
DEVICES = ("pynq", "sim")
TIMING = {"pynq": "measured", "sim": "modelled"}
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141


@dataclass(frozen=True)
class DeployedModel:
    """What the generation loop needs of a deployed model, on one card or split over several: its
    size limits, the token ids that frame text and its tokenizer file (relative to ``folder``; None
    when absent)."""

    folder: Path
    name: str
    vocab: int
    max_context: int
    bos_token_id: int
    eos_token_id: int
    tokenizer: str | None

    def to_json(self) -> dict:
        values = asdict(self)
        del values["folder"]
        return {"format": FORMAT, **values}

    @classmethod
    def read(cls, folder: Path) -> Deployment | ClusterDeployment:
        """The deployment ``llmc deploy`` wrote to ``folder``: a cluster's when it lists ``cards``."""
        path = Path(folder) / MANIFEST
        try:
            values = json.loads(path.read_text())
        except FileNotFoundError:
            raise LlmcError(f"{folder}: not a deployed llmc folder ({MANIFEST} missing)") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise LlmcError(f"{path}: corrupt: {e}") from None
        if not isinstance(values, dict) or values.get("format") != FORMAT:
            raise LlmcError(f"{path}: format {values.get('format') if isinstance(values, dict) else '?'} is not "
                            f"this runtime's ({FORMAT}): deploy again with this llmc")
        try:
            common = {"folder": Path(folder), "name": str(values["name"]), "vocab": int(values["vocab"]),
                      "max_context": int(values["max_context"]), "bos_token_id": int(values["bos_token_id"]),
                      "eos_token_id": int(values["eos_token_id"]), "tokenizer": values["tokenizer"]}
            if "cards" in values:
                cards = tuple(DeployedCard(str(c["folder"]), str(c["program_digest"]), c["xclbin"])
                              for c in values["cards"])
                return ClusterDeployment(**common, parallel=str(values["parallel"]), cards=cards)
            return Deployment(**common, program_digest=str(values["program_digest"]), xclbin=values["xclbin"])
        except (KeyError, TypeError, ValueError) as e:
            raise LlmcError(f"{path}: corrupt: {e!r}") from None

    def tokenizer_or_reason(self) -> tuple[ByteLevelBPE | None, str]:
        """The tokenizer, or None and why there is none."""
        if self.tokenizer is None:
            return None, "a tokenizer, and this model has none"
        path = self.folder / self.tokenizer
        try:
            return ByteLevelBPE.from_json(path.read_text()), ""
        except UnsupportedTokenizer as e:
            return None, f"a byte-level BPE tokenizer ({e})"
        except OSError as e:
            raise LlmcError(f"{path}: cannot read: {e.strerror}") from None

    def prompt_ids(self, prompt: str | None, ids_text: str | None, tokenizer: ByteLevelBPE | None,
                   reason: str) -> list[int]:
        """The prompt's token ids (``<bos>`` first, as the model was trained) from text or ids."""
        if ids_text is not None:
            ids = parse_ids(ids_text)
        elif tokenizer is None:
            raise LlmcError(f"--prompt needs {reason}: pass --prompt-ids")
        else:
            ids = tokenizer.encode(prompt or "")
            if self.bos_token_id >= 0 and ids[:1] != [self.bos_token_id]:
                ids = [self.bos_token_id, *ids]
        if not ids:
            raise LlmcError("the prompt is empty")
        bad = [i for i in ids if not 0 <= i < self.vocab]
        if bad:
            raise LlmcError(f"prompt token id {bad[0]} is outside the vocabulary [0, {self.vocab})")
        return ids

    def check_positions(self, prompt: int, max_new_tokens: int) -> None:
        """Refuse a run that would not fit the compiled KV cache, before the device is touched."""
        if max_new_tokens < 0:
            raise LlmcError("--max-new-tokens must be at least 0")
        if prompt > self.max_context:
            raise LlmcError(f"the prompt has {prompt} tokens, longer than the compiled context of {self.max_context}")
        need = prompt + max(max_new_tokens - 1, 0)
        if need > self.max_context:
            raise LlmcError(f"a prompt of {prompt} tokens and --max-new-tokens {max_new_tokens} need {need} positions; "
                            f"the design holds {self.max_context} (at most --max-new-tokens "
                            f"{self.max_context - prompt + 1})")


@dataclass(frozen=True)
class Deployment(DeployedModel):
    """A design for one card: ``design.json``, ``program.bin`` and ``weights.bin`` in ``folder``, the
    program's digest and the xclbin file (relative to ``folder``; None when not built)."""

    program_digest: str
    xclbin: str | None

    def load_image(self) -> ProjectImage:
        """The program and weights, checked against the folder's manifest, each other and this deployment."""
        image = ProjectImage.load(self.folder)
        check_deployed(image, self.program_digest)
        return image

    def simulator(self) -> IssDevice:
        return IssDevice(self.load_image())

    def open_pynq(self, xclbin: Path | None, card: int) -> PynqDevice:
        """Alveo card ``card`` programmed with ``xclbin`` (default: the deployed one)."""
        image = self.load_image()
        path = xclbin or (self.folder / self.xclbin if self.xclbin else None)
        if path is None:
            raise LlmcError(f"{self.folder}: no xclbin deployed: build one (llmc build PROJECT writes "
                            "llmc_accel.hw.xclbin), then deploy it (llmc deploy --xclbin), or pass run.py --xclbin FILE")
        return PynqDevice.open(image, path, card)


@dataclass(frozen=True)
class DeployedCard:
    """One card of a deployed cluster: its folder, its program's digest and its xclbin (relative to
    the deployment's folder; None when not built)."""

    folder: str
    program_digest: str
    xclbin: str | None


@dataclass(frozen=True)
class ClusterDeployment(DeployedModel):
    """A model split over cards (``llmc compile --cards N``): ``cluster.json`` in ``folder`` and one
    design folder per card, run segment by segment with the transfers through the host."""

    parallel: str
    cards: tuple[DeployedCard, ...]

    def load_image(self) -> ClusterImage:
        """Every card's program and weights, checked against the manifests, each other and this deployment."""
        image = ClusterImage.load(self.folder)
        if len(image.cards) != len(self.cards):
            raise LlmcError(f"{self.folder / CLUSTER_FILE}: {len(image.cards)} cards, deployed with {len(self.cards)}: "
                            "deploy again")
        for card, deployed in zip(image.cards, self.cards):
            check_deployed(card, deployed.program_digest)
        return image

    def simulator(self) -> ClusterIssDevice:
        return ClusterIssDevice(self.load_image())

    def open_pynq(self, xclbin: Path | None, card: int) -> PynqClusterDevice:
        """Card ``i`` of the cluster on Alveo card ``card + i``, programmed with its deployed xclbin."""
        if xclbin is not None:
            raise LlmcError(f"{self.name} is split over {len(self.cards)} cards, each with its own xclbin: "
                            "--xclbin applies to one-card designs")
        image, xclbins = self.load_image(), []
        for c, deployed in enumerate(self.cards):
            if deployed.xclbin is None:
                raise LlmcError(f"card {c}: no xclbin deployed: build each card's project (llmc build "
                                f"CLUSTER/{deployed.folder}), then llmc deploy CLUSTER again")
            xclbins.append(self.folder / deployed.xclbin)
        return PynqClusterDevice.open(image, xclbins, card)


def check_deployed(image: ProjectImage, program_digest: str) -> None:
    """Refuse a design that is not the one deployed, or has no weights."""
    if image.program_digest != program_digest:
        raise LlmcError(f"{image.path / 'program.bin'}: not the program this folder was deployed with "
                        "(program_digest differs): deploy again")
    if not image.has_weights:
        raise LlmcError(f"{image.path / 'weights.bin'}: missing (the design was compiled without weights?)")


@contextmanager
def open_device(deployment: Deployment | ClusterDeployment, kind: str, xclbin: Path | None = None,
                card: int = 0) -> Iterator[TimedDevice]:
    """The simulator, or the Alveo card(s) from card ``card`` on (``xclbin``: a one-card design's
    other build)."""
    if kind not in DEVICES:
        raise LlmcError(f"unknown device '{kind}' (choose from {', '.join(DEVICES)})")
    if kind == "sim":
        yield deployment.simulator()
        return
    device = deployment.open_pynq(xclbin, card)
    try:
        yield device
    finally:
        device.close()


def generate_on(deployment: Deployment | ClusterDeployment, kind: str, args: argparse.Namespace, out: TextIO,
                xclbin: Path | None = None, card: int = 0) -> int:
    """Answer the prompt of ``args`` (generation arguments, ``--seed``, ``--json``) on device
    ``kind``: text streams to ``out``, then a timing line to stderr; or one JSON object."""
    tokenizer, reason = deployment.tokenizer_or_reason()
    ids = deployment.prompt_ids(args.prompt, args.prompt_ids, tokenizer, reason)
    deployment.check_positions(len(ids), args.max_new_tokens)
    sampling = sampling_options(args)
    stops = [deployment.eos_token_id] if deployment.eos_token_id >= 0 else []
    text = TextStream(tokenizer.decode if tokenizer is not None else None)
    seconds: list[float] = []
    with open_device(deployment, kind, xclbin, card) as device:
        timed = ReportedTime(device)
        for token, step in generate_stream(timed, ids, args.max_new_tokens, sampling, stops, clock=timed.clock):
            seconds.append(step)
            piece = text.push(token)
            if not args.json:
                print(piece, end="", flush=True, file=out)
    timing = summary(seconds, TIMING[kind])
    if args.json:
        print(json.dumps({"name": deployment.name, "device": kind, "prompt_ids": ids, "tokens": text.ids,
                          "text": text.text, "seconds": seconds, **timing}), file=out)
    else:
        print(file=out)
        decode = f", decode {timing['decode_tokens_per_s']:,.1f} tokens/s" if len(seconds) > 1 else ""
        print(f"{kind}: {len(ids)} prompt tokens, prefill {timing['prefill_ms']:.3f} ms, {len(seconds)} new tokens"
              f"{decode} ({timing['timing']})", file=sys.stderr)
    return 0


def summary(seconds: Sequence[float], kind: str) -> dict:
    """Prefill time (the first token's) and decode rate (the others') of a run."""
    decode = seconds[1:]
    return {"timing": kind, "prefill_ms": seconds[0] * 1e3 if seconds else 0.0,
            "decode_tokens_per_s": len(decode) / sum(decode) if decode and sum(decode) > 0 else 0.0}


def build_parser(name: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="run.py", description=f"Generate text with {name} on an Alveo card "
                                     "(PYNQ) or on llmc's instruction-set simulator.")
    parser.add_argument("--device", choices=DEVICES, required=True,
                        help="pynq: the card; sim: the instruction-set simulator (modelled timing)")
    add_generation_arguments(parser)
    parser.add_argument("--seed", type=int, default=0, help="seed of sampling (default 0)")
    parser.add_argument("--xclbin", type=Path, metavar="FILE",
                        help="--device pynq: this xclbin, not the deployed one (a one-card design)")
    parser.add_argument("--card", type=int, default=0, metavar="N",
                        help="--device pynq: the N-th Alveo card (0); a cluster's card i runs on Alveo card N + i")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


def main(folder: Path, argv: Sequence[str] | None = None) -> int:
    """``run.py ARGV`` of the deployed ``folder``; user errors print one line and return 2."""
    try:
        deployment = Deployment.read(folder)
    except LlmcError as e:
        print(f"run.py: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    args = build_parser(deployment.name).parse_args(argv)
    try:
        return generate_on(deployment, args.device, args, sys.stdout, args.xclbin, args.card)
    except BrokenPipeError:  # the reader left early (run.py | head): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        print("\nrun.py: interrupted (the folder is unchanged; run again to start over)", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (LlmcError, OSError) as e:
        if args.debug:
            traceback.print_exc()
        message = f"{e.filename}: {e.strerror}" if isinstance(e, OSError) and e.filename else str(e)
        print(f"run.py: error: {' '.join(message.split())}", file=sys.stderr)
        return EXIT_USER_ERROR
