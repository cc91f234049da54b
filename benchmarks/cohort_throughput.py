"""Cohort throughput: 12 generated slides mapped by one process, ``--cluster local:1`` and
``--cluster local:2``; slides/min, tiles/s and what Dask costs per slide.

Each mode runs in a fresh process on a fresh output folder. For the cluster modes the
LocalCluster is started first and timed on its own (``startup``), then ``run_cohort`` maps the
slides on it (``map``); the single process times ``run_slides`` after building its predictor.
The scheduling overhead per slide is measured directly, as the round trip of one no-op task
per slide through the same client (submit, schedule, run, gather), and indirectly, as
``(local:1 map - one process map) / slides`` (Dask's own costs plus one ONNX session per
worker and the result and progress traffic).

Slides: pyramidal JPEG TIFFs at 0.25 µm/px from ``slide_throughput.write_slide`` (elliptical
tissue with holes, ~70% of the area), one seed per slide; tiles are 800 level-0 px.

    .venv/bin/python benchmarks/cohort_throughput.py [--bundle BUNDLE] [--slides 12] [--size 10000]

Without ``--bundle`` a random-weights tf_efficientnet_lite0 bundle at input 96 is built (needs
torch), as in ``slide_throughput.py``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from slide_throughput import build_tiny_bundle, write_slide  # noqa: E402

MODES = ("1 process", "local:1", "local:2")


def _noop(path: str) -> str:
    return path


def child(mode: str, bundle: Path, slides: Path, out: Path) -> None:
    """One measured mode, alone in its process: prints one JSON line."""
    from idcscan.maps.mapper import SlideOptions

    options = SlideOptions(mpp=0.25)
    record: dict = {"mode": mode}
    if mode == "1 process":
        from idcscan.runtime.predictor import Predictor
        from idcscan.maps.run import run_slides

        t0 = time.perf_counter()
        predictor = Predictor(bundle)
        record["startup"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        report = run_slides(predictor, [slides], out, options, progress=False)
        record["map"] = time.perf_counter() - t0
        record["workers"] = f"1 x {os.cpu_count()} ORT threads"
    else:
        from distributed import Client, LocalCluster

        from idcscan.cohorts.run import available_cores, run_cohort

        n = int(mode.split(":")[1])
        threads = max(1, available_cores() // n)
        t0 = time.perf_counter()
        with LocalCluster(
            n_workers=n, threads_per_worker=threads, dashboard_address=":0",
            silence_logs=logging.ERROR,
        ) as cluster, Client(cluster) as client:  # fmt: skip
            client.wait_for_workers(n)
            record["startup"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            report = run_cohort(bundle, [slides], out, options, client=client, progress=False,
                                report=False)  # fmt: skip
            record["map"] = time.perf_counter() - t0
            paths = [str(p) for p in sorted(slides.iterdir())]
            rounds = []
            for _ in range(3):
                t0 = time.perf_counter()
                client.gather(client.map(_noop, paths, pure=False))
                rounds.append((time.perf_counter() - t0) / len(paths))
            record["noop_per_task"] = sorted(rounds)[1]
        record["workers"] = f"{n} x {threads} ORT thread(s)"
    record["slides"] = len(report.done)
    record["tiles"] = sum(s.n_tiles for s in report.done)
    record["failed"] = len(report.failed)
    keys = ("read", "tissue", "infer", "write", "total")
    record["per_slide"] = {
        k: sorted(s.timings.get(k, 0.0) for s in report.done)[len(report.done) // 2] for k in keys
    }
    print(json.dumps(record))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", type=Path, help="bundle dir (default: tiny random Lite0)")
    parser.add_argument("--slides", type=int, default=12)
    parser.add_argument("--size", type=int, default=10_000, help="slide side, level-0 px")
    parser.add_argument("--work", type=Path, help="folder for slides and outputs (temp)")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, bundle, slides, out = args.child
        child(mode, Path(bundle), Path(slides), Path(out))
        return

    work = args.work or Path(tempfile.mkdtemp(prefix="idcscan-cohort-bench-"))
    try:
        bundle = args.bundle or build_tiny_bundle(work / "bundle")
        slides = work / "slides"
        slides.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        for i in range(args.slides):
            write_slide(slides / f"slide{i:02d}.tif", args.size, 0.25, seed=i)
        gen_s = time.perf_counter() - t0
        results = {}
        for mode in MODES:
            out = work / f"out-{mode.replace(' ', '-').replace(':', '')}"
            shutil.rmtree(out, ignore_errors=True)
            proc = subprocess.run(
                [sys.executable, __file__, "--child", mode, str(bundle), str(slides), str(out)],
                check=True, capture_output=True, text=True,
            )  # fmt: skip
            results[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"{args.slides} slides of {args.size} x {args.size} px at 0.25 µm/px "
              f"(generated in {gen_s:.0f} s); {os.cpu_count()} CPU cores\n")  # fmt: skip
        head = ("mode", "workers", "startup s", "map s", "slides/min", "tiles/s", "tiles")
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for mode, r in results.items():
            assert r["failed"] == 0 and r["slides"] == args.slides, r
            print(f"| {mode} | {r['workers']} | {r['startup']:.1f} | {r['map']:.1f} | "
                  f"{60 * r['slides'] / r['map']:.1f} | {r['tiles'] / r['map']:.0f} | "
                  f"{r['tiles']} |")  # fmt: skip
        single, local1 = results["1 process"], results["local:1"]
        print()
        for mode in MODES[1:]:
            print(f"Dask no-op task round trip ({mode}): "
                  f"{1000 * results[mode]['noop_per_task']:.1f} ms per slide")  # fmt: skip
        for mode, r in results.items():
            split = ", ".join(f"{k} {v:.2f}" for k, v in r["per_slide"].items())
            print(f"median seconds per slide ({mode}): {split}")
        extra = (local1["map"] - single["map"]) / args.slides
        print(f"local:1 map - 1 process map: {1000 * extra:+.0f} ms per slide")
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
