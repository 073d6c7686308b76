"""Run by tests/test_ddp.py under torchrun: one tiny epoch of DDP training, then each rank saves its weights."""
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

import polar

out = Path(sys.argv[1])
cfg = polar.TrainConfig(model="resnet20", dataset="synthetic", subset=40, epochs=1, batch_size=20, lr=0.05,
                        lr_schedule="constant", reg="polar", lam=0.01, t=1.2, device="cpu")
torch.manual_seed(int(os.environ["RANK"]))  # different initial weights per rank: DDP must broadcast rank 0's
model = polar.create_model("resnet20")
events = list(polar.train(cfg, model=model))
steps = sum(isinstance(e, polar.StepEvent) for e in events)
torch.save({"params": {k: p.detach() for k, p in model.named_parameters()}, "steps": steps,
            "test_acc": events[-1].test_acc}, out / f"rank{dist.get_rank()}.pt")
polar.finish_distributed()  # a barrier, then destroy: no rank exits with gloo work pending
