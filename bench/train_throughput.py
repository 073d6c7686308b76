"""Training throughput: Polar's training step vs. a baseline written the way the paper's code does it.

Baseline: a torchvision-style CIFAR dataset (uint8 array -> PIL image per sample) with Pad/RandomCrop/Flip/
ToTensor/Normalize transforms in a DataLoader, the model in default (NCHW) memory format, the polarization
penalty added to the loss and γ clamped after each step, fp32. Polar: ``polar.train`` itself (device-resident data,
batched augmentation, channels_last), once in fp32 (``amp=False``) and once with bf16 autocast (``amp=True``: on
CUDA, and on CPUs with native bf16; elsewhere it falls back to fp32 and says so). Same model, batch size,
regularizer and images, measured in one run, interleaved; the baseline gets its better DataLoader setting (0 or 2
workers on CPU).

    python bench/train_throughput.py                       # resnet20, batch 128, on the best device
    python bench/train_throughput.py --device cpu --model resnet56 --repeats 5

Prints images/s and the ratio; writes results/bench/train_throughput_<device>.json (with this script's source).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

import polar

REPO = Path(__file__).resolve().parents[1]


class PilCifar(Dataset):
    """What torchvision.datasets.CIFAR10 does per sample: uint8 HWC array -> PIL image -> transforms."""

    def __init__(self, images: polar.ImageTensors, transform) -> None:
        self.data = images.train_x.permute(0, 2, 3, 1).numpy()  # (N, H, W, 3) uint8, as torchvision stores it
        self.targets = images.train_y.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        return self.transform(Image.fromarray(self.data[i])), self.targets[i]




def baseline_images_per_s(images: polar.ImageTensors, model_name: str, batch: int, steps: int, warmup: int,
                          device: torch.device, workers: int) -> float:
    tf = transforms.Compose([transforms.Pad(4), transforms.RandomCrop(32), transforms.RandomHorizontalFlip(),
                             transforms.ToTensor(),
                             transforms.Normalize((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))])
    loader = DataLoader(PilCifar(images, tf), batch_size=batch, shuffle=True, num_workers=workers, drop_last=True,
                        pin_memory=device.type == "cuda", persistent_workers=workers > 0)
    torch.manual_seed(0)
    model = polar.create_model(model_name, num_classes=len(images.classes)).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    reg = polar.Polarization(lam=1e-4, t=1.2)
    done, t0 = 0, 0.0
    while done < warmup + steps:
        for x, y in loader:
            if done == warmup:
                polar.synchronize(device)
                t0 = time.perf_counter()
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = F.cross_entropy(model(x), y) + reg(model)
            opt.zero_grad()
            loss.backward()
            opt.step()
            reg.clamp_(model)
            done += 1
            if done == warmup + steps:
                break
    polar.synchronize(device)
    return steps * batch / (time.perf_counter() - t0)


def polar_images_per_s(images: polar.ImageTensors, model_name: str, batch: int, steps: int, warmup: int,
                       device: torch.device, amp: bool, compile: bool = False) -> float:
    data = polar.DeviceDataset(images, device)
    epochs = -(-(warmup + steps) // data.steps_per_epoch(batch))
    cfg = polar.TrainConfig(model=model_name, dataset="cifar10", epochs=epochs, batch_size=batch, lr=0.05,
                            lr_schedule="constant", reg="polar", lam=1e-4, t=1.2, device=str(device), amp=amp,
                            compile=compile)
    t0 = 0.0
    for event in polar.train(cfg, data=data):
        if isinstance(event, polar.StepEvent):
            if event.step == warmup:
                polar.synchronize(device)
                t0 = time.perf_counter()
            if event.step == warmup + steps:
                polar.synchronize(device)
                return steps * batch / (time.perf_counter() - t0)
    raise RuntimeError("not enough steps")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=60, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--compile", action="store_true",
                        help="also Polar bf16 under torch.compile (CUDA graphs on CUDA); warm-up includes compiling")
    parser.add_argument("--data-dir", default=str(REPO / "data"))
    parser.add_argument("--out", default=str(REPO / "results" / "bench"))
    args = parser.parse_args()
    device = polar.resolve_device(args.device)
    try:
        images, dataset = polar.load_images("cifar10", data_dir=args.data_dir, download=False), "cifar10"
    except polar.DatasetError:
        images, dataset = polar.load_images("synthetic"), "synthetic (CIFAR-10 not found)"
    worker_options = [0, 2] if device.type == "cpu" else [8]
    print(f"{args.model}, batch {args.batch_size}, {dataset}, {device} "
          f"({torch.cuda.get_device_name(device) if device.type == 'cuda' else f'{torch.get_num_threads()} threads'})")
    bf16 = polar.uses_bf16(device, True)
    print(f"bf16 autocast on {device}: {'yes' if bf16 else 'no (no native bf16: polar_bf16 runs fp32)'}")
    runs: dict[str, list[float]] = {f"baseline_workers{w}": [] for w in worker_options} | {"polar_fp32": [],
                                                                                           "polar_bf16": []}
    if args.compile:
        runs["polar_bf16_compiled"] = []
    for r in range(args.repeats):  # interleaved, so drift in machine load hits every variant alike
        for w in worker_options:
            runs[f"baseline_workers{w}"].append(baseline_images_per_s(images, args.model, args.batch_size, args.steps,
                                                                      args.warmup, device, w))
        for amp in (False, True):
            runs[f"polar_{'bf16' if amp else 'fp32'}"].append(
                polar_images_per_s(images, args.model, args.batch_size, args.steps, args.warmup, device, amp))
        if args.compile:
            runs["polar_bf16_compiled"].append(
                polar_images_per_s(images, args.model, args.batch_size, args.steps, args.warmup, device, True, True))
        print(f"  repeat {r + 1}: " + ", ".join(f"{k} {v[-1]:.0f} img/s" for k, v in runs.items()))
    median = {k: statistics.median(v) for k, v in runs.items()}
    base_key = max((k for k in median if k.startswith("baseline")), key=median.get)
    ratios = {k: median[k] / median[base_key] for k in runs if k.startswith("polar")}
    ratio = max(ratios.values())
    print(f"baseline ({base_key}): {median[base_key]:.0f} img/s | "
          + " | ".join(f"{k}: {median[k]:.0f} img/s ({ratios[k]:.2f}x)" for k in ratios)
          + f" (medians of {args.repeats})")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {"model": args.model, "batch_size": args.batch_size, "dataset": dataset, "device": str(device),
              "threads": torch.get_num_threads(), "runs": runs, "median": median, "baseline": base_key,
              "bf16": bf16, "ratios": ratios, "ratio": ratio, "torch": torch.__version__,
              "code": Path(__file__).read_text()}
    (out / f"train_throughput_{device.type}.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
