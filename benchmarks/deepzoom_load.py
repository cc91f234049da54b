"""Deep-zoom tile server under load: tile latency and server memory while clients browse.

    python benchmarks/deepzoom_load.py BUNDLE [--side 50000] [--clients 8] [--tiles 2000]
        [--workers N]

Writes a ``--side`` x ``--side`` pyramidal TIFF (``idcscan.data.synthetic_slide``: tiled,
4x pyramid, mostly glass with three pieces of tissue) into a temporary folder, starts
``idcscan serve BUNDLE --slides DIR`` as a user does (a subprocess on a free loopback port),
then ``--clients`` keep-alive connections fetch ``--tiles`` random Deep Zoom tiles between
them: a level drawn uniformly from the top 8 (what a person zooming about asks for; the
deepest levels hold most tiles), then a random tile of it. Prints tiles/s, latency
p50/p90/p99, the server's CPU per tile and its resident memory (VmRSS sampled every 50 ms,
its peak; the model included), both summed over the server's processes (one worker per core).

The clients share this machine with the server, so they are kept light: one asyncio loop
speaking plain HTTP/1.1 (tens of microseconds of CPU a request, where an httpx client thread
took about as much CPU as the server's tile itself and so halved what the server could get).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from serve_load import free_port, idcscan_command  # noqa: E402


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants: `serve` runs one worker process per core under it."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    tree, frontier = [pid], [pid]
    while frontier:
        frontier = [child for child, parent in parents.items() if parent in frontier]
        tree.extend(frontier)
    return tree


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes so far (/proc/PID/stat), seconds."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def rss_mb(pids: list[int]) -> float:
    """Resident memory of these processes together (VmRSS summed), MB."""
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as fh:
                total += next((int(line.split()[1]) for line in fh
                               if line.startswith("VmRSS:")), 0) / 1024.0
        except OSError:
            continue
    return total


def main() -> int:
    import subprocess

    from idcscan.data.synthetic_slide import write_synthetic_wsi

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--side", type=int, default=50_000)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--tiles", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=None,
                    help="passed to idcscan serve (default: its own, one process per core)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="idcscan-dz-") as tmp:
        slides = Path(tmp) / "slides"
        slides.mkdir()
        t0 = time.perf_counter()
        path = write_synthetic_wsi(slides / "big.tif", args.side, args.side, mpp=0.25)
        print(f"wrote {args.side} x {args.side} px pyramidal TIFF "
              f"({path.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - t0:.0f} s")
        port = free_port()
        cmd = idcscan_command() + ["serve", str(args.bundle), "--port", str(port),
                                   "--slides", str(slides), "--maps", str(Path(tmp) / "maps")]
        if args.workers is not None:
            cmd += ["--workers", str(args.workers)]
        log = Path(tmp) / "serve.log"
        proc = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 180
            while True:
                try:
                    if httpx.get(base + "/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"idcscan serve did not start:\n{log.read_text()[-2000:]}")
                time.sleep(0.25)
            slide = httpx.get(base + "/api/slides", timeout=60).json()[0]
            sid = slide["id"]
            for _ in range(4 * args.clients):  # new connections: every worker opens the slide
                with httpx.Client() as c:
                    c.get(f"{base}/slides/{sid}.dzi", timeout=60)
            server = process_tree(proc.pid)
            rss_idle = rss_mb(server)

            top = math.ceil(math.log2(args.side))
            rng = np.random.default_rng(args.seed)
            urls = []
            for _ in range(args.tiles):
                level = int(rng.integers(top - 7, top + 1))
                n = math.ceil(math.ceil(args.side / 2 ** (top - level)) / 254)
                col, row = rng.integers(0, n, 2)
                urls.append(f"{base}/slides/{sid}_files/{level}/{col}_{row}.jpeg")

            latencies: list[float] = []
            errors = [0]
            peak = [rss_idle]
            done = threading.Event()

            def sample() -> None:
                while not done.is_set():
                    peak[0] = max(peak[0], rss_mb(server))
                    time.sleep(0.05)

            async def client(paths: list[str]) -> None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                for path in paths:
                    t = time.perf_counter()
                    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
                    head = await reader.readuntil(b"\r\n\r\n")
                    status = int(head.split(b" ", 2)[1])
                    length = int(next(line.split(b":", 1)[1] for line in head.split(b"\r\n")
                                      if line.lower().startswith(b"content-length:")))
                    await reader.readexactly(length)
                    latencies.append((time.perf_counter() - t) * 1000)
                    if status != 200:
                        errors[0] += 1
                writer.close()

            async def clients() -> None:
                paths = [u[len(base):] for u in urls]
                await asyncio.gather(*(client(paths[i :: args.clients])
                                       for i in range(args.clients)))  # fmt: skip

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            t0 = time.perf_counter()
            cpu0 = cpu_seconds(server)
            asyncio.run(clients())
            wall = time.perf_counter() - t0
            server_cpu = cpu_seconds(server) - cpu0
            done.set()
            sampler.join()
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    lat = sorted(latencies)

    def pct(q: float) -> float:
        return lat[min(len(lat) - 1, int(q * len(lat)))]

    print(f"\n$ {cmd[0]} serve BUNDLE --slides DIR  ({args.clients} clients, "
          f"{args.tiles} random tiles of levels {top - 7}-{top})")
    print("| slide | clients | tiles | errors | tiles/s | p50 ms | p90 ms | p99 ms | mean ms "
          "| server CPU ms/tile | RSS idle MB | RSS peak MB |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    print(f"| {args.side:,} x {args.side:,} | {args.clients} | {len(lat)} | {errors[0]} | "
          f"{len(lat) / wall:.0f} | {pct(0.5):.1f} | {pct(0.9):.1f} | {pct(0.99):.1f} | "
          f"{statistics.fmean(lat):.1f} | {1000 * server_cpu / max(1, len(lat)):.1f} | "
          f"{rss_idle:.0f} | {peak[0]:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
