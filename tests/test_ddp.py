"""DistributedDataParallel through torchrun: 2 CPU processes on gloo train one tiny epoch to identical weights."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

import polar


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_ranks_end_with_identical_weights(tmp_path: Path) -> None:
    worker = Path(__file__).with_name("ddp_worker.py")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), str(worker), str(tmp_path)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    # 400 synthetic images / 2 ranks / batch 20: each rank takes 10 steps on its own half of the data
    assert r0["steps"] == r1["steps"] == 10
    assert r0["test_acc"] == r1["test_acc"]  # evaluation is summed over both ranks' shards
    assert r0["params"].keys() == r1["params"].keys()
    for name, p in r0["params"].items():
        torch.testing.assert_close(p, r1["params"][name], rtol=0, atol=0, msg=name)
    torch.manual_seed(0)
    start = polar.create_model("resnet20")  # rank 0's initial weights: training really moved them
    assert not torch.equal(start.conv1.weight, r0["params"]["conv1.weight"])
