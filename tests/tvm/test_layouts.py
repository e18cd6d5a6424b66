"""Weight layouts of the TVM kernels: packed words and N:M sparse packing (NumPy only)."""

from __future__ import annotations

import numpy as np
import pytest

from llmc.backends.tvm import layouts
from llmc.errors import LlmcError

RNG = np.random.default_rng(0)


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 8])
def test_packed_words_hold_every_code_low_bits_first(bits: int) -> None:
    slot = layouts.slot_bits(bits)
    u = RNG.integers(0, 1 << bits, size=(5, 37)).astype(np.uint32)  # 37 columns: the last word is partial
    words = layouts.pack_words(u, slot)
    per = 32 // slot
    assert words.shape == (5, -(-37 // per)) and words.dtype == np.uint32
    k = np.arange(37)
    unpacked = (words[:, k // per] >> ((k % per) * slot).astype(np.uint32)) & ((1 << slot) - 1)
    assert np.array_equal(unpacked, u)


def test_sparse_pack_keeps_the_non_zeros_in_column_order() -> None:
    w = np.array([[0, 3, 0, 5, 7, 0, 0, 0]], np.float32)
    values, index = layouts.sparse_pack(w, w != 0, 2, 4, "w")
    assert values.tolist() == [[3, 5, 7, 0]] and index.tolist() == [[1, 3, 0, 1]]
    rebuilt = np.zeros_like(w)
    cols = (np.arange(4) // 2) * 4 + index[0]
    rebuilt[0, cols] = values[0]
    assert np.array_equal(rebuilt, w)


def test_sparse_pack_refuses_a_dense_block() -> None:
    w = np.ones((2, 8), np.float32)
    with pytest.raises(LlmcError, match="more than 2 non-zeros"):
        layouts.sparse_pack(w, w != 0, 2, 4, "layer.weight")
