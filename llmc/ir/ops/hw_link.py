"""Accelerator ops that move activations between the cards of a cluster.

A model split over several cards is one ``step`` function per card; ``hw_send`` publishes a
value under a slot number, unique in the step, and ``hw_recv`` on any card reads it. Their
meaning is that of a Kahn network: a card waits at ``hw_recv`` until the slot's value has been
sent, so the result does not depend on the order the cards run in. They run in
:func:`llmc.ir.cluster.run_cluster`; a lone function that receives cannot run.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from llmc.ir.ops.hw import I32, check_act
from llmc.ir.registry import AttrSpec, InferError, RefContext, register
from llmc.ir.types import Dim, TensorType


@register("hw_send", inputs=1, attrs={"slot": AttrSpec("int")}, side_effect=True)
class HwSend:
    """Send the activation rows ``x`` [T, C] as slot ``slot``; the result is ``x`` itself."""

    @staticmethod
    def infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
        check_act(ins[0], "hw_send")
        if attrs["slot"] < 0:
            raise InferError(f"hw_send slot {attrs['slot']} is negative")
        return [ins[0]]

    @staticmethod
    def ref(ins: list[np.ndarray], attrs: dict[str, Any], ctx: RefContext) -> list[np.ndarray]:
        return [ins[0]]


@register("hw_recv", inputs=1, attrs={"slot": AttrSpec("int"), "cols": AttrSpec("int")})
class HwRecv:
    """The activation rows [T, cols] sent as slot ``slot``; ``positions`` [T] (the step's
    ``position_ids``) gives the row count."""

    @staticmethod
    def infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
        positions = ins[0]
        if positions.rank != 1 or positions.dtype != I32:
            raise InferError(f"hw_recv takes the positions [T] as i32, got {positions}")
        if attrs["cols"] <= 0 or attrs["slot"] < 0:
            raise InferError(f"hw_recv needs cols > 0 and slot >= 0, got {attrs['cols']} and {attrs['slot']}")
        return [TensorType((positions.shape[0], Dim.of(attrs["cols"])), I32)]

    @staticmethod
    def ref(ins: list[np.ndarray], attrs: dict[str, Any], ctx: RefContext) -> list[np.ndarray]:
        raise ValueError(f"slot {attrs['slot']} is received from another card: run the cards with run_cluster")
