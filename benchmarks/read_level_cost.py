"""Slide mode's cost of reading tiles from a level twice as fine as the training scale.

Usage:
    python benchmarks/read_level_cost.py BUNDLE [--side 12000] [--rounds 3]

Writes a 40x-like pyramid (0.25 µm/px, levels at downsamples 1, 4, 16, tiled JPEG with 4:2:0
chroma, as scanners write them) of real-looking H&E texture (the test suite's, no patient
data), then maps it alternately with ``slides.tiling.READ_FINER`` at 1 (the level at the
training scale, ds 16) and 2 (the finer ds-4 level, shrunk), in one process, and prints the
median seconds of each and their ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from slide_helpers import texture  # noqa: E402

import idcscan.slides.tiling as tiling  # noqa: E402
from idcscan.maps.mapper import SlideOptions  # noqa: E402
from idcscan.maps.run import analyse_slide  # noqa: E402
from idcscan.runtime.predictor import Predictor  # noqa: E402


def write_pyramid(path: Path, side: int) -> None:
    rng = np.random.default_rng(0)
    small = texture(rng, side // 16, side // 16, "idc")
    small[: side // 32] = texture(rng, side // 32, side // 16, "glass")
    base = np.asarray(Image.fromarray(small).resize((side, side), Image.Resampling.BICUBIC))
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        for i, ds in enumerate((1, 4, 16)):
            level = base if ds == 1 else np.asarray(
                Image.fromarray(base).resize((side // ds, side // ds), Image.Resampling.BOX))
            per_cm = 1e4 / (0.25 * ds)
            extra = {"subifds": 2} if i == 0 else {"subfiletype": 1}
            tif.write(level, tile=(256, 256), photometric="rgb", compression="jpeg",
                      compressionargs={"level": 80}, resolution=(per_cm, per_cm),
                      resolutionunit="CENTIMETER", **extra)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("bundle")
    ap.add_argument("--side", type=int, default=12000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    predictor = Predictor(args.bundle)
    with tempfile.TemporaryDirectory() as tmp:
        slide = Path(tmp) / "pyramid.tif"
        write_pyramid(slide, args.side)
        times: dict[int, list[float]] = {1: [], 2: []}
        for r in range(args.rounds):
            for finer in (1, 2) if r % 2 == 0 else (2, 1):
                tiling.READ_FINER = finer
                start = time.perf_counter()
                summary = analyse_slide(predictor, slide, Path(tmp) / f"out-{finer}-{r}",
                                    SlideOptions())
                times[finer].append(time.perf_counter() - start)
        print(f"pyramid {args.side} x {args.side} px at 0.25 µm/px, {summary.n_tiles} tissue "
              f"tiles, engine {predictor.engine.info.as_dict()['engine']}")
        print("| read from | seconds (median) | all rounds |\n| --- | --- | --- |")
        for finer, label in ((1, "ds 16 (the training scale)"), (2, "ds 4, shrunk (READ_FINER 2)")):
            print(f"| {label} | {statistics.median(times[finer]):.2f} | "
                  f"{', '.join(f'{t:.2f}' for t in times[finer])} |")
        ratio = statistics.median(times[2]) / statistics.median(times[1])
        print(f"\nREAD_FINER 2 takes {ratio:.2f} times as long")


if __name__ == "__main__":
    main()
