"""Ship a finished training run as one of Polar's trained baselines (polar/baselines/ + manifest.json).

    python scripts/publish_baseline.py --run runs/baseline-resnet20 --name resnet20 \
        --command "polar train --model resnet20 ..."

The accuracy recorded is polar.evaluate's on the full test split, measured on the fp16 weights that ship.
"""
from __future__ import annotations

import argparse

import polar
from polar.pretrained import publish


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", required=True, help="a run directory written by polar train")
    parser.add_argument("--name", required=True, help="the name polar.pretrained() will know it by")
    parser.add_argument("--command", required=True, help="the exact command that trained it (recorded)")
    args = parser.parse_args()
    cfg = polar.TrainConfig.from_dict(polar.RunDir(args.run).read_config())
    data = polar.load_dataset(cfg.dataset, data_dir=cfg.data_dir, download=False)
    entry = publish(args.run, args.name, args.command, data)
    print(f"{args.name}: {entry['model']} on {entry['dataset_source']}, test accuracy {entry['test_acc']:.4f}, "
          f"sha256 {entry['sha256'][:12]}…, file polar/baselines/{entry['file']}")


if __name__ == "__main__":
    main()
