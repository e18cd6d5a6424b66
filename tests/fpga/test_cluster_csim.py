"""A cluster's cards C-simulated segment by segment give the logits of their ISSs bit for bit (the
bundled model over 2 cards, pipeline and tensor parallel), and their test benches refuse bad commands."""

from __future__ import annotations

import json

import numpy as np
import pytest
from zoo import PROMPT

from llmc.errors import LlmcError
from llmc.sim.cluster import ClusterImage, ClusterIssDevice
from llmc.sim.cluster_csim import ClusterCsimDevice
from llmc.sim.csim import CsimProcess


@pytest.mark.parametrize("parallel", ["pipeline", "tensor"])
def test_cluster_csim_is_bit_exact_with_the_iss(tiny_clusters, gxx_ap_types, parallel):
    folder = tiny_clusters[parallel]
    iss = ClusterIssDevice(ClusterImage.load(folder))
    with ClusterCsimDevice(folder) as csim:
        want, got = [iss.run(PROMPT[:6])], [csim.run(PROMPT[:6])]
        for _ in range(2):
            token = int(np.argmax(want[-1][-1]))
            want.append(iss.run([token]))
            got.append(csim.run([token]))
        assert [len(accounts) for accounts in csim.accounts] == [2, 2, 2]
        assert all(sum(a.by_opcode.get(op, 0) for a in csim.accounts[0]) > 0 for op in ("SEND", "RECV"))
    assert all(np.array_equal(g, w) for g, w in zip(got, want))


def test_llmc_csim_runs_a_cluster(tiny_clusters, gxx_ap_types, capsys):
    """llmc csim on a cluster folder generates the cards' ISS tokens and reports each card's cycles,
    its SEND and RECV among them."""
    from llmc.cli import main

    iss = ClusterIssDevice(ClusterImage.load(tiny_clusters["pipeline"]))
    logits, want = iss.run(PROMPT[:6]), []
    for _ in range(3):
        want.append(int(np.argmax(logits[-1])))
        logits = iss.run([want[-1]])
    ids = ",".join(map(str, PROMPT[:6]))
    assert main(["csim", str(tiny_clusters["pipeline"]), "--prompt-ids", ids, "--max-new-tokens", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["tokens"] == want
    first, last = out["cycles"]["cards"]
    assert first["by_opcode"]["SEND"] > 0 and last["by_opcode"]["RECV"] > 0 and last["prefill"] > 0 and last["decode"]


@pytest.mark.parametrize(
    ("command", "message"),
    [("get 0 99999999", "get: N missing or outside 0.."), ("seg 5 1 0 0", "seg: no program for bucket 5"),
     ("seg 16 17 0 0", "seg: R missing or outside 1..16"), ("put 0 8", "put: fewer than N bytes"),
     ("logits 1 2", "logits: unexpected '2'"), ("bogus", "unknown command 'bogus'")],
)  # fmt: skip
def test_cluster_test_bench_refuses_bad_commands(tiny_clusters, gxx_ap_types, command, message):
    with CsimProcess(tiny_clusters["pipeline"] / "card0", timeout=60) as card:
        card.command(command)
        card.proc.stdin.close()  # the end of input: put finds fewer bytes than it was promised
        with pytest.raises(LlmcError, match=rf"C-simulation stopped \(exit status 3\): {message}"):
            card.receive(1)
