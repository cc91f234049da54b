"""Load test of `idcscan serve`: requests/s and latency for 50x50 PNG uploads to /predict.

    python benchmarks/serve_load.py BUNDLE [--clients 1 --clients 16] [--requests 2000]
        [--tool auto|ab|httpx|both] [--explain] [--workers N]

Starts the server exactly as a user does (``idcscan serve BUNDLE --port P`` as a subprocess on
127.0.0.1, a free port), waits for /health, then posts H&E-like 50x50 PNG patches with 1 and 16
concurrent clients and prints requests/s, p50/p99 latency and errors. The load comes from
ApacheBench (``ab``, Debian package apache2-utils; C, so the client costs the server little
CPU) when installed, and/or from an asyncio + httpx generator (sub-millisecond timings; ab
reports whole milliseconds). Loops are bounded by ``--requests``; nothing leaves loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from PIL import Image
from rich.console import Console
from rich.table import Table

from idcscan import DISCLAIMER

console = Console()
BOUNDARY = "idcscanbenchboundary7d1e"


@dataclass
class Result:
    tool: str
    clients: int
    requests: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def png_patches(n: int, seed: int = 0) -> list[bytes]:
    """Distinct 50x50 H&E-like PNGs (synthetic), so no response cache could help."""
    from idcscan.data.synthetic import render_patient

    out: list[bytes] = []
    index = 0
    while len(out) < n:
        for patch in render_patient(seed, index, 25).patches():
            if patch.shape[:2] != (50, 50):
                continue
            buf = io.BytesIO()
            Image.fromarray(np.ascontiguousarray(patch)).save(buf, format="PNG")
            out.append(buf.getvalue())
        index += 1
    return out[:n]


def multipart(png: bytes) -> bytes:
    return (
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="patch.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + png
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )


def idcscan_command() -> list[str]:
    script = Path(sys.executable).with_name("idcscan")
    if script.exists():
        return [str(script)]
    found = shutil.which("idcscan")
    if found:
        return [found]
    return [sys.executable, "-c", "from idcscan.cli import main; main()"]


def start_server(bundle: Path, port: int, workers: int, log: Path) -> subprocess.Popen:
    cmd = idcscan_command() + ["serve", str(bundle), "--host", "127.0.0.1", "--port", str(port)]
    if workers > 1:
        cmd += ["--workers", str(workers)]
    console.print(f"$ {' '.join(cmd)}", highlight=False)
    proc = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(
                f"idcscan serve exited ({proc.returncode}):\n{log.read_text()[-2000:]}"
            )
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    proc.terminate()
    raise SystemExit("idcscan serve did not answer /health within 180 s")


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# ------------------------------------------------------------------------------- generators


async def _httpx_run(url: str, bodies: list[bytes], clients: int, total: int) -> Result:
    latencies: list[float] = []
    errors = 0
    counter = iter(range(total))
    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async with httpx.AsyncClient(timeout=60, limits=limits) as client:

        async def worker() -> None:
            nonlocal errors
            for i in counter:
                t0 = time.perf_counter()
                try:
                    response = await client.post(
                        url, content=bodies[i % len(bodies)], headers=headers
                    )
                    ok = response.status_code == 200
                except httpx.HTTPError:
                    ok = False
                latencies.append(time.perf_counter() - t0)
                errors += not ok

        # Warm-up (model, threads, connections) outside the timed window.
        await asyncio.gather(
            *(client.post(url, content=bodies[0], headers=headers) for _ in range(clients))
        )
        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        elapsed = time.perf_counter() - start
    ms = sorted(1000 * x for x in latencies)
    return Result("httpx", clients, len(ms), errors, elapsed, statistics.median(ms), _pct(ms, 99))


def _pct(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, int(round(q / 100 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


def run_httpx(url: str, bodies: list[bytes], clients: int, total: int) -> Result:
    return asyncio.run(_httpx_run(url, bodies, clients, total))


def run_ab(url: str, body: bytes, clients: int, total: int, workdir: Path) -> Result:
    body_file = workdir / "body.bin"
    body_file.write_bytes(body)
    cmd = [
        "ab",
        "-q",
        "-k",
        "-n",
        str(total),
        "-c",
        str(clients),
        "-s",
        "60",
        "-p",
        str(body_file),
        "-T",
        f"multipart/form-data; boundary={BOUNDARY}",
        url,
    ]
    # Warm-up run, then the measured one.
    subprocess.run(cmd[:3] + [str(min(total, 50))] + cmd[4:], capture_output=True, check=False)
    out = subprocess.run(cmd, capture_output=True, text=True, check=False).stdout

    def grab(pattern: str, default: float = float("nan")) -> float:
        m = re.search(pattern, out, re.MULTILINE)
        return float(m.group(1)) if m else default

    complete = int(grab(r"^Complete requests:\s+(\d+)", 0))
    failed = int(grab(r"^Failed requests:\s+(\d+)", 0))
    non2xx = int(grab(r"^Non-2xx responses:\s+(\d+)", 0))
    seconds = grab(r"^Time taken for tests:\s+([\d.]+)", 0.0)
    if not complete:
        raise SystemExit(f"ab produced no result:\n{out}")
    return Result(
        "ab",
        clients,
        complete,
        failed + non2xx,
        seconds,
        grab(r"^\s+50%\s+(\d+)"),
        grab(r"^\s+99%\s+(\d+)"),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--clients", type=int, action="append", help="concurrency (default 1, 16)")
    parser.add_argument("--requests", type=int, default=2000, help="requests per measurement")
    parser.add_argument("--tool", choices=["auto", "ab", "httpx", "both"], default="auto")
    parser.add_argument("--explain", action="store_true", help="ask for Grad-CAM overlays too")
    parser.add_argument("--workers", type=int, default=1, help="`idcscan serve --workers`")
    args = parser.parse_args(argv)
    clients = args.clients or [1, 16]
    have_ab = shutil.which("ab") is not None
    if args.tool == "ab" and not have_ab:
        raise SystemExit("ab not found: apt-get install apache2-utils (or use --tool httpx)")
    tools = {
        "auto": ["ab"] if have_ab else ["httpx"],
        "both": ["ab", "httpx"] if have_ab else ["httpx"],
    }
    tools |= {"ab": ["ab"], "httpx": ["httpx"]}

    bodies = [multipart(p) for p in png_patches(64)]
    port = free_port()
    url = f"http://127.0.0.1:{port}/predict" + ("?explain=true" if args.explain else "")
    with tempfile.TemporaryDirectory(prefix="idcscan-load-") as tmp:
        workdir = Path(tmp)
        proc = start_server(args.bundle, port, args.workers, workdir / "server.log")
        try:
            card = httpx.get(f"http://127.0.0.1:{port}/health", timeout=10).json()["model"]
            results = []
            for tool in tools[args.tool]:
                for c in clients:
                    if tool == "ab":
                        results.append(run_ab(url, bodies[0], c, args.requests, workdir))
                    else:
                        results.append(run_httpx(url, bodies, c, args.requests))
        finally:
            stop_server(proc)

    console.print(
        f"[bold]{card['name']}[/] ({card['backbone']}, input {card['input_size']} px), "
        f"{os.cpu_count()} CPUs, serve workers {args.workers}, "
        f"POST /predict{'?explain=true' if args.explain else ''} with 50x50 PNGs"
    )
    table = Table(title="idcscan serve under load")
    for col in ("tool", "clients", "requests", "errors", "requests/s", "p50 ms", "p99 ms"):
        table.add_column(col, justify="left" if col == "tool" else "right")
    for r in results:
        table.add_row(
            r.tool,
            str(r.clients),
            str(r.requests),
            str(r.errors),
            f"{r.rps:,.0f}",
            f"{r.p50_ms:.1f}" if r.tool == "httpx" else f"{r.p50_ms:.0f}",
            f"{r.p99_ms:.1f}" if r.tool == "httpx" else f"{r.p99_ms:.0f}",
        )
    console.print(table)
    if any(r.tool == "ab" for r in results):
        console.print("ab reports latency in whole milliseconds.", style="dim")
    console.print(f"[yellow]{DISCLAIMER}[/]", highlight=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
