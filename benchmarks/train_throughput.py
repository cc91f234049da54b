"""Training throughput on this machine: model steps vs. the data pipeline that feeds them.

    .venv/bin/python benchmarks/train_throughput.py [--data DATA] [--batch-size 64] [--steps 6]

For each backbone and input size it times full steps of phase 2 (whole backbone unfrozen:
forward, backward, AdamW; and with the recipe's partial unfreeze), phase 1 (frozen backbone)
and inference, through the same code the trainer runs. Then the data pipeline alone (batch indexing from the in-memory split plus
augmentation), and the ratio of the two: the loader must stay well ahead of the model.
Without --data it packs a small synthetic dataset in a temporary folder.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch is imported

import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from idcscan.data.datamodule import IDCDataModule  # noqa: E402
from idcscan.training.config import TrainConfig  # noqa: E402
from idcscan.training.module import IDCModule  # noqa: E402
from idcscan.training.train import build_network  # noqa: E402

BACKBONES = ("tf_efficientnet_lite0", "efficientnet_b0")
SIZES = (64, 96)


def median_time(fn, steps: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def model_rates(dm: IDCDataModule, backbone: str, size: int, steps: int) -> dict[str, float]:
    cfg = TrainConfig(data="", out="", backbone=backbone, input_size=size, weights="none")
    images, labels = dm.train_batches_for_probe(1)[0]
    augmented = dm.augment_train(images)
    out = {}
    for key, phase, unfreeze in (("phase1", 1, "all"), ("phase2", 2, "all"),
                                 ("recipe", 2, cfg.unfreeze)):
        net = build_network(cfg).to(memory_format=torch.channels_last)
        module = IDCModule(net, unfreeze=unfreeze)
        optimizer = torch.optim.AdamW(module.param_groups(), lr=1e-5)
        module.train()
        module.set_phase(phase)

        def step() -> None:
            loss, _ = module.compute_loss(augmented, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        out[key] = len(labels) / median_time(step, steps)
    net.eval()
    with torch.no_grad():
        out["inference"] = len(labels) / median_time(lambda: net(images), steps)
    return out


def loader_rate(dm: IDCDataModule, steps: int) -> float:
    dm.set_schedule([steps + 2])
    batches = dm.train_batches(0)
    it = iter(range(len(batches)))

    def one() -> None:
        images, _ = batches[next(it)]
        dm.augment_train(images)

    return dm.batch_size / median_time(one, steps)


def synthetic_data(root: Path) -> Path:
    from idcscan.data.packing import prepare
    from idcscan.data.synthetic import generate_dataset

    generate_dataset(root / "kaggle" / "IDC_regular_ps50_idx5", patients=10,
                     patches_per_patient=60, seed=0)
    prepare(root / "kaggle", root / "packed", progress=False)
    return root / "packed"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="packed dataset (default: synthetic)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    console = Console(width=130)
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or synthetic_data(Path(tmp))
        dm = IDCDataModule(data, batch_size=args.batch_size)
        dm.load()
        feed = loader_rate(dm, max(args.steps, 10))
        table = Table(title=f"Training throughput, img/s (batch {args.batch_size}, "
                            f"{args.threads} threads, {os.cpu_count()} CPUs, "
                            f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')})")
        recipe = TrainConfig(data="", out="").unfreeze
        for col in ("backbone", "input", "phase 2 (all unfrozen)",
                    f"phase 2 (unfreeze {recipe})", "phase 1 (frozen)", "inference",
                    "loader+augment", "loader / phase 2"):
            table.add_column(col, justify="right")
        for backbone in BACKBONES:
            for size in SIZES:
                r = model_rates(dm, backbone, size, args.steps)
                table.add_row(backbone, str(size), f"{r['phase2']:.0f}", f"{r['recipe']:.0f}",
                              f"{r['phase1']:.0f}",
                              f"{r['inference']:.0f}", f"{feed:.0f}",
                              f"{feed / r['phase2']:.0f}x")
                console.print(f"[dim]{backbone} {size}: done[/]")
        console.print(table)
        load = os.getloadavg()
        console.print(f"load average during the run: {load[0]:.1f} (other work on the CPU "
                      "lowers every number; compare rows, not runs)")


if __name__ == "__main__":
    main()
