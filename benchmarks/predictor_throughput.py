"""Predictor throughput: PyTorch eager vs ONNX Runtime fp32 vs ONNX Runtime int8, on CPU.

    python benchmarks/predictor_throughput.py BUNDLE [--int8 BUNDLE_INT8] [--data DATA]
        [--torch-checkpoint WEIGHTS] [--threads N] [--seconds S] [--batch 1 --batch 64]

Prints images/second at each batch size. PyTorch eager runs an IDCNet with the bundle's backbone
and input size; a bundle carries no torch weights, so unless ``--torch-checkpoint`` (safetensors
state dict, or a Lightning .ckpt read with ``weights_only=True``) is given the weights are random:
same architecture, same compute, same speed. ``ORT fp32 (no fusion)`` is the same ONNX graph with
graph optimisations off, to show what fusion buys. With ``--data`` (a prepared dataset) it also
scores the test split with fp32 and int8 and prints both AUCs and how often they agree.
Every loop is bounded by ``--seconds`` and ``--max-iters``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
from rich.console import Console
from rich.table import Table

from idcscan import DISCLAIMER
from idcscan.runtime.bundle import load_bundle
from idcscan.runtime.predictor import Predictor

console = Console()


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def sample_patches(data: Path | None, n: int, seed: int = 0) -> np.ndarray:
    """Inputs: test-split patches when a dataset is given, else synthetic H&E-like ones."""
    if data is not None:
        from idcscan.data.packed import load_packed

        test = load_packed(data).subset("test")
        idx = np.sort(
            np.random.default_rng(seed).choice(len(test), min(n, len(test)), replace=False)
        )
        patches = test.images(idx)
    else:
        from idcscan.data.synthetic import render_patient
        from idcscan.preprocessing import pad_to_patch

        patient = render_patient(seed, 0, n)
        patches = np.stack([pad_to_patch(np.asarray(p)) for p in patient.patches()])
    reps = -(-n // len(patches))
    return np.ascontiguousarray(np.concatenate([patches] * reps)[:n])


def measure(run: Callable[[np.ndarray], object], x: np.ndarray, seconds: float, max_iters: int):
    """(images/s, median ms per call) over a bounded timed loop after two warm-up calls."""
    run(x)
    run(x)
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(times) < max_iters and (len(times) < 3 or time.perf_counter() < deadline):
        t0 = time.perf_counter()
        run(x)
        times.append(time.perf_counter() - t0)
    return len(x) * len(times) / sum(times), 1000 * statistics.median(times)


def torch_runner(bundle_dir: Path, checkpoint: Path | None, threads: int):
    import torch

    from idcscan.training.network import IDCNet

    card = load_bundle(bundle_dir).card
    torch.manual_seed(0)
    torch.set_num_threads(threads)
    net = IDCNet(card.backbone, card.pre).eval()
    label = "PyTorch eager fp32 (random weights)"
    if checkpoint is not None:
        if checkpoint.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(checkpoint))
        else:
            state = torch.load(str(checkpoint), map_location="cpu", weights_only=True)
            state = state.get("state_dict", state)
        for prefix in ("net.", "model.", "module."):
            if all(k.startswith(prefix) for k in state):
                state = {k[len(prefix) :]: v for k, v in state.items()}
        net.load_state_dict(state)
        label = "PyTorch eager fp32"

    def run(x: np.ndarray):
        with torch.inference_mode():
            return net(torch.from_numpy(x))

    return label, run


def unfused_runner(bundle_dir: Path, threads: int):
    bundle = load_bundle(bundle_dir)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(
        str(bundle.onnx_path), options, providers=["CPUExecutionProvider"]
    )
    return lambda x: session.run(["logit"], {"image": x})


def auc_table(fp32: Predictor, int8: Predictor | None, data: Path, limit: int | None) -> Table:
    from sklearn.metrics import roc_auc_score

    from idcscan.data.packed import load_packed

    test = load_packed(data).subset("test")
    n = len(test) if limit is None else min(limit, len(test))
    idx = (
        np.arange(len(test))
        if n == len(test)
        else np.sort(np.random.default_rng(0).choice(len(test), n, replace=False))
    )
    x, y = test.images(idx), test.label[idx]
    table = Table(title=f"Test split of {data} ({n} patches, {int(y.sum())} IDC)")
    for col in ("model", "AUC", "accuracy @ threshold", "max |ΔP| vs fp32", "same decision"):
        table.add_column(col, justify="right" if col != "model" else "left")
    p32 = fp32.predict_proba(x)
    rows = [("ONNX Runtime fp32", p32, fp32.threshold)]
    if int8 is not None:
        rows.append(("ONNX Runtime int8", int8.predict_proba(x), int8.threshold))
    for name, p, thr in rows:
        auc = roc_auc_score(y, p) if 0 < y.sum() < len(y) else float("nan")
        table.add_row(
            name,
            f"{auc:.4f}",
            f"{np.mean((p >= thr) == y):.4f}",
            f"{np.abs(p - p32).max():.4f}",
            f"{np.mean((p >= thr) == (p32 >= fp32.threshold)):.4f}",
        )
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--int8", type=Path, help="int8 bundle from `idcscan quantize`")
    parser.add_argument(
        "--data", type=Path, help="prepared dataset: inputs + AUC on its test split"
    )
    parser.add_argument("--torch-checkpoint", type=Path)
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch eager rows")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--batch", type=int, action="append", help="batch sizes (default 1 and 64)")
    parser.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    parser.add_argument("--max-iters", type=int, default=2000, help="cap on calls per measurement")
    parser.add_argument("--auc-limit", type=int, help="score at most this many test patches")
    args = parser.parse_args(argv)
    batches = args.batch or [1, 64]

    fp32 = Predictor(args.bundle, threads=args.threads, batch_size=max(batches))
    card = fp32.card
    int8 = (
        Predictor(args.int8, threads=args.threads, batch_size=max(batches)) if args.int8 else None
    )
    x_all = sample_patches(args.data, max(batches))

    engines: list[tuple[str, Callable[[np.ndarray], object]]] = []
    if not args.no_torch:
        engines.append(torch_runner(args.bundle, args.torch_checkpoint, args.threads))
    engines.append(("ONNX Runtime fp32 (no fusion)", unfused_runner(args.bundle, args.threads)))
    engines.append(("ONNX Runtime fp32", fp32.predict_proba))
    if int8 is not None:
        engines.append(("ONNX Runtime int8", int8.predict_proba))

    console.print(
        f"[bold]{card.name}[/] ({card.backbone}, input {card.input_size} px) on {cpu_name()}, "
        f"{args.threads} threads, onnxruntime {ort.__version__}, python {sys.version.split()[0]}"
    )
    table = Table(title="Predictor throughput (higher is better)")
    table.add_column("engine")
    for b in batches:
        table.add_column(f"batch {b}\nimg/s", justify="right")
        table.add_column(f"batch {b}\nms/call", justify="right")
    for name, run in engines:
        cells = []
        for b in batches:
            rate, ms = measure(run, x_all[:b], args.seconds, args.max_iters)
            cells += [f"{rate:,.0f}", f"{ms:.2f}"]
        table.add_row(name, *cells)
    console.print(table)

    if args.data is not None:
        console.print(auc_table(fp32, int8, args.data, args.auc_limit))
    console.print(f"[yellow]{DISCLAIMER}[/]", highlight=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
