"""A Llama-2-7B-shaped config imports without materialising weights: under 20 s, under 2 GB."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

LLAMA2_7B = {
    "model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
    "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32000, "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-5, "bos_token_id": 1, "eos_token_id": 2, "tie_word_embeddings": False, "torch_dtype": "float16",
}

PROBE = """
import json, resource, sys, time
start = time.perf_counter()
import llmc
model = llmc.load(sys.argv[1], shapes_only=True)
seconds = time.perf_counter() - start
params = sum(p.type.numel().value for p in model.module.params.values())
print(json.dumps({"seconds": seconds, "params": params, "has_weights": model.module.has_weights,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "decode_inputs": [str(v.type) for v in model.module.functions["decode"].inputs[:4]]}))
"""


def test_llama2_7b_config_imports_shapes_only(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(LLAMA2_7B))
    out = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path)], capture_output=True, text=True, timeout=300, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["params"] == 6_738_415_616 + 64  # Llama-2-7B's weights and the RoPE inverse frequencies
    assert not result["has_weights"]
    assert result["seconds"] < 20
    assert result["peak_mb"] < 2048
    assert result["decode_inputs"][3] == "tensor<1x32xPx128xf32>"
