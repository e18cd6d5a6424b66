"""Write tests/frontend/data/optimum/{llama,qwen2,gpt2,mistral}.onnx with optimum's own export command.

optimum-onnx 0.1.0 requires transformers < 4.58, so it cannot share llmc's environment (transformers 5);
this script makes a separate virtual environment for it and runs ``optimum-cli export onnx`` there::

    python3 scripts/optimum_fixtures.py                  # venv in /tmp/optimum-venv, files in the repo
    python3 scripts/optimum_fixtures.py --venv DIR --out DIR
    python3 scripts/optimum_fixtures.py mistral          # only the files named
    /tmp/optimum-venv/bin/python scripts/optimum_fixtures.py --build mistral   # in a venv already made

The environment holds torch 2.13.0 (CPU; the wheel in /opt/wheels when there is one, else from PyTorch's
CPU index), optimum-onnx 0.1.0 (which pulls optimum 2.1.0), transformers 4.57.6 and onnxruntime
1.31.1, which optimum runs to fix the dynamic axes and to check its export. For each family it
saves a random-weight checkpoint (seed 0; hidden 64, 2 layers, 4 heads of which 2 KV for Llama, Qwen2 and Mistral,
a 256-token vocabulary, weights of standard deviation 0.3, whose greedy continuation of a prompt
varies from token to token; the norm weights and biases, initialised to ones and zeros, moved by random
noise so that the files hold no shared values; Mistral with a sliding window of 16 keys, which optimum's
file keeps in its mask) with a word-level tokenizer made
with ``tokenizers``, runs::

    optimum-cli export onnx --model CHECKPOINT --task text-generation-with-past OUT

(optimum's default opset for the family) and saves OUT/model.onnx with its weights inline (a few hundred KB) as ``<family>.onnx``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PINS = ["optimum-onnx==0.1.0", "optimum==2.1.0", "transformers==4.57.6", "tokenizers==0.22.2", "onnx==1.23.2",
        "onnxruntime==1.31.1"]  # optimum runs onnxruntime to fix the dynamic axes and check the export
TORCH_WHEEL = Path("/opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl")
TORCH_INDEX = "https://download.pytorch.org/whl/cpu"
WINDOW = 16  # Mistral's sliding window: past the prompt, within the 37 tokens of the tests
COMMON = dict(vocab_size=256, initializer_range=0.3, bos_token_id=1, eos_token_id=2, pad_token_id=0)
CONFIGS = {
    "llama": dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=128),
    "qwen2": dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=128),
    "gpt2": dict(n_embd=64, n_layer=2, n_head=4, n_positions=128),
    "mistral": dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, max_position_embeddings=128, sliding_window=WINDOW),
}


def make_venv(venv: Path) -> Path:
    """``venv``'s python, the environment made first if missing, the pinned packages installed."""
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    torch = [str(TORCH_WHEEL)] if TORCH_WHEEL.exists() else ["torch==2.13.0", "--extra-index-url", TORCH_INDEX]
    subprocess.run([str(python), "-m", "pip", "install", "-q", *torch, *PINS], check=True)
    return python


def checkpoint(family: str, out: Path) -> None:
    """A transformers checkpoint of ``family`` with random weights and a word-level tokenizer."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(family, **COMMON, **CONFIGS[family]))
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1 and bool((p == p[0]).all()):  # norm weights (ones), biases (zeros): make them count
                p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(out)
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, **{f"t{i}": i for i in range(3, COMMON["vocab_size"])}}
    words = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=words, unk_token="<pad>", pad_token="<pad>", bos_token="<s>",
                            eos_token="</s>").save_pretrained(out)


def build(out: Path, families: list[str]) -> None:
    """Run in the optimum environment: export each family and save its file with inline weights."""
    import onnx

    out.mkdir(parents=True, exist_ok=True)
    cli = Path(sys.executable).parent / "optimum-cli"
    for family in families:
        with tempfile.TemporaryDirectory() as tmp:
            source, exported = Path(tmp) / "hf", Path(tmp) / "onnx"
            checkpoint(family, source)
            subprocess.run([str(cli), "export", "onnx", "--model", str(source), "--task", "text-generation-with-past",
                            str(exported)], check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
            model = onnx.load(str(exported / "model.onnx"))  # reads external data, if any
            model.doc_string = "optimum-cli export onnx --task text-generation-with-past (optimum-onnx 0.1.0)"
            onnx.save(model, str(out / f"{family}.onnx"))
        size = (out / f"{family}.onnx").stat().st_size
        print(f"{family}: {out / f'{family}.onnx'} {size / 1024:.0f} KB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", type=Path, default=Path("/tmp/optimum-venv"))
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "frontend" / "data" / "optimum")
    parser.add_argument("--build", action="store_true", help="(internal) export, inside the optimum environment")
    parser.add_argument("families", nargs="*", metavar="FAMILY", help=f"the files to write: {', '.join(CONFIGS)} (default: all)")
    args = parser.parse_args()
    families = args.families or list(CONFIGS)
    if unknown := sorted(set(families) - set(CONFIGS)):
        parser.error(f"unknown families: {', '.join(unknown)} (known: {', '.join(CONFIGS)})")
    if args.build:
        build(args.out.resolve(), families)
        return
    python = make_venv(args.venv)
    subprocess.run([str(python), __file__, "--build", "--out", str(args.out.resolve()), *families], check=True)


if __name__ == "__main__":
    main()
