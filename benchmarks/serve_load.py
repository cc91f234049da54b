"""`idcscan serve` under load, beside the predictor alone, in one run; then a soak with bad inputs.

    python benchmarks/serve_load.py BUNDLE --patches KAGGLE_DIR
        [--requests 5000] [--clients 1 --clients 16 --clients 64]
        [--soak-requests 20000] [--soak-clients 64] [--no-soak] [-- SERVE_ARGS...]

1. The predictor alone (in this process, every core, the engine ``idcscan serve`` picks: the
   default, or ``--runtime`` among SERVE_ARGS): images/s at batch 1 and 64 on real patches.
2. ``idcscan serve BUNDLE --port P`` started exactly as a user starts it (plus any
   ``SERVE_ARGS`` after ``--``), as a subprocess on 127.0.0.1; ApacheBench (``ab``, Debian
   package apache2-utils) posts real 50x50 PNG patches (multipart field ``file``) to
   ``/predict`` with 1, 16 and 64 clients: requests/s, p50/p99 (ab: whole milliseconds),
   failures and non-2xx answers. Each level gets a warm-up run first.
3. Soak: ``--soak-clients`` x ``--soak-requests`` with ab while this script fires a stream of
   bad inputs at the same server (the catalogue in ``BAD_INPUTS``, clients that disconnect
   mid-upload, connections that never send their headers). Reported: ab failures and non-2xx,
   every bad input's status (a 5xx fails the run), the server processes' RSS after warm-up and
   at its peak, and what the server processes wrote to storage (``/proc/PID/io``) and to
   their TMPDIR during the soak.

Prints one table; exits 1 if a requirement is missed (>= 500 requests/s with 16 clients,
p50 <= 5 ms with one, 0 errors, 0 5xx, RSS growth <= 25%, nothing written).
"""

from __future__ import annotations

import argparse
import io
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from PIL import Image
from rich.console import Console
from rich.table import Table

from idcscan import DISCLAIMER

console = Console()
BOUNDARY = "idcscanbenchboundary7d1e"


# ------------------------------------------------------------------------------ inputs


def real_patches(root: Path, n: int, seed: int = 0) -> list[bytes]:
    """``n`` real 50x50 Kaggle patches (PNG bytes as stored), drawn at random."""
    files = [p for p in root.rglob("*.png") if "_class" in p.name]
    if not files:
        raise SystemExit(f"No Kaggle patches (*_class?.png) under {root}.")
    random.Random(seed).shuffle(files)
    out = []
    for path in files:
        data = path.read_bytes()
        with Image.open(io.BytesIO(data)) as im:
            if im.size == (50, 50):
                out.append(data)
        if len(out) == n:
            break
    return out


def multipart(png: bytes, field_name: str = "file") -> bytes:
    return (
        f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{field_name}\"; "
        'filename="patch.png"\r\nContent-Type: image/png\r\n\r\n'
    ).encode() + png + f"\r\n--{BOUNDARY}--\r\n".encode()


def _bomb_png() -> bytes:
    """A valid PNG header claiming 100,000 x 100,000 pixels (a decompression bomb)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF
        )

    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))


def bad_inputs(real: bytes) -> dict[str, tuple[dict[str, str], bytes, int]]:
    """name -> (headers, body, expected status): the seed's bad-input catalogue."""
    mp = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    return {
        "empty body": (mp, b"", 400),
        "not multipart": ({"Content-Type": "text/plain"}, b"hello", 400),
        "no file field": (mp, multipart(real, "image"), 400),
        "truncated PNG": (mp, multipart(real[: len(real) // 2]), 400),
        "random bytes": (mp, multipart(os.urandom(2048)), 400),
        "PDF": (mp, multipart(b"%PDF-1.4\n" + os.urandom(512)), 415),
        "SVG": (mp, multipart(b'<svg xmlns="http://www.w3.org/2000/svg"></svg>'), 415),
        "bomb header": (mp, multipart(_bomb_png()), 413),
    }


# ------------------------------------------------------------------------------ server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def idcscan_command() -> list[str]:
    script = Path(sys.executable).with_name("idcscan")
    if script.exists():
        return [str(script)]
    found = shutil.which("idcscan")
    return [found] if found else [sys.executable, "-m", "idcscan.cli"]


@dataclass
class Server:
    proc: subprocess.Popen
    port: int
    tmpdir: Path
    output: list[str] = field(default_factory=list)

    def pids(self) -> list[int]:
        """The serve process and its workers (the multiprocessing helpers included)."""
        found = [self.proc.pid]
        for pid in found:
            try:
                children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            except OSError:
                continue
            found.extend(int(c) for c in children)
        return found

    def _sum(self, name: str, pattern: str) -> int:
        """A number summed over the server's processes from /proc/PID/<name>."""
        total = 0
        for pid in self.pids():
            try:
                text = Path(f"/proc/{pid}/{name}").read_text()
            except OSError:
                continue
            m = re.search(pattern, text, re.MULTILINE)
            total += int(m.group(1)) if m else 0
        return total

    def rss_mb(self) -> float:
        return self._sum("status", r"^VmRSS:\s+(\d+) kB") / 1024

    def written_bytes(self) -> int:
        """Bytes the server processes sent to storage (``write_bytes`` in /proc/PID/io)."""
        return self._sum("io", r"^write_bytes:\s+(\d+)")


def start_server(bundle: Path, port: int, extra: list[str], tmpdir: Path) -> Server:
    cmd = idcscan_command() + ["serve", str(bundle), "--port", str(port), *extra]
    console.print(f"$ {' '.join(cmd)}", highlight=False)
    env = {**os.environ, "TMPDIR": str(tmpdir), "COLUMNS": "200"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    server = Server(proc, port, tmpdir)

    def drain() -> None:  # the log goes to memory, so the server writes no file of its own
        assert proc.stdout is not None
        for line in proc.stdout:
            server.output.append(line.decode(errors="replace").rstrip())

    threading.Thread(target=drain, daemon=True).start()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("idcscan serve exited:\n" + "\n".join(server.output[-40:]))
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    proc.terminate()
    raise SystemExit("idcscan serve did not answer /health within 300 s")


def stop_server(server: Server) -> None:
    server.proc.terminate()
    try:
        server.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait()


# ------------------------------------------------------------------------------ measuring


@dataclass
class Row:
    what: str
    clients: str
    count: int
    errors: int
    rate: float
    p50_ms: float | None = None
    p99_ms: float | None = None


def predictor_rows(bundle: Path, patches: list[bytes], seconds: float,
                   runtime: str | None) -> tuple[list[Row], str]:
    from idcscan.images import decode_rgb
    from idcscan.runtime.predictor import Predictor
    from idcscan.preprocessing import to_patch
    from idcscan.server.runtime import usable_cores

    predictor = Predictor(bundle, threads=usable_cores(), runtime=runtime)
    arrays = np.stack([to_patch(decode_rgb(p), 50) for p in patches])
    rows = []
    for batch in (1, 64):
        data = np.resize(arrays, (max(batch, 64), 50, 50, 3))[:batch]
        predictor.predict_proba(data)  # warm-up
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            predictor.predict_proba(data)
            done += batch
        rate = done / (time.perf_counter() - start)
        rows.append(Row(f"predictor alone, batch {batch}", "-", done, 0, rate))
    return rows, str(predictor.engine.info)


def run_ab(url: str, body: bytes, clients: int, total: int, workdir: Path) -> Row:
    body_file = workdir / f"body-{clients}.bin"
    body_file.write_bytes(body)
    base = ["ab", "-q", "-k", "-c", str(clients), "-s", "60", "-p", str(body_file),
            "-T", f"multipart/form-data; boundary={BOUNDARY}"]
    subprocess.run(base + ["-n", str(min(total, 20 * clients)), url], capture_output=True)
    out = subprocess.run(base + ["-n", str(total), url], capture_output=True, text=True).stdout

    def grab(pattern: str, default: float = float("nan")) -> float:
        m = re.search(pattern, out, re.MULTILINE)
        return float(m.group(1)) if m else default

    complete = int(grab(r"^Complete requests:\s+(\d+)", 0))
    if not complete:
        raise SystemExit(f"ab produced no result:\n{out}")
    failed = int(grab(r"^Failed requests:\s+(\d+)", 0))
    non2xx = int(grab(r"^Non-2xx responses:\s+(\d+)", 0))
    return Row(
        "idcscan serve, POST /predict (ab)", str(clients), complete, failed + non2xx,
        grab(r"^Requests per second:\s+([\d.]+)"), grab(r"^\s+50%\s+(\d+)"),
        grab(r"^\s+99%\s+(\d+)"),
    )


@dataclass
class BadStream:
    """Bad inputs fired at the server from a thread until stopped, with their answers."""

    port: int
    catalogue: dict[str, tuple[dict[str, str], bytes, int]]
    statuses: Counter = field(default_factory=Counter)
    unexpected: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def _disconnect_mid_upload(self, body: bytes) -> None:
        head = (f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
                f"boundary={BOUNDARY}\r\nContent-Length: {len(body)}\r\n\r\n").encode()
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as conn:
            conn.sendall(head + body[: len(body) // 2])
        self.statuses["disconnect mid-upload: (gone)"] += 1

    def _oversize(self, client: httpx.Client) -> None:
        head = (f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
                f"boundary={BOUNDARY}\r\nContent-Length: 500000000\r\n\r\n").encode()
        with socket.create_connection(("127.0.0.1", self.port), timeout=60) as conn:
            conn.sendall(head)
            raw = b""
            while chunk := conn.recv(65536):
                raw += chunk
        self._record("500 MB Content-Length", int(raw.split(b" ", 2)[1]), 413)

    def _record(self, name: str, status: int, expected: int) -> None:
        self.statuses[f"{name}: {status}"] += 1
        if status != expected:
            self.unexpected.append(f"{name}: got {status}, expected {expected}")

    def run(self, good_body: bytes) -> None:
        silent: list[socket.socket] = []
        with httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=60) as client:
            while not self.stop.is_set():
                for name, (headers, body, expected) in self.catalogue.items():
                    r = client.post("/predict", content=body, headers=headers)
                    self._record(name, r.status_code, expected)
                    if r.status_code != 200:
                        assert "error" in r.json()
                self._record("GET /predict", client.get("/predict").status_code, 405)
                self._disconnect_mid_upload(good_body)
                self._oversize(client)
                # Slowloris: keep 16 connections that never send headers (the server cuts
                # them off after its header deadline; replace those it closed).
                silent = [s for s in silent if not _closed(s)]
                while len(silent) < 16:
                    silent.append(socket.create_connection(("127.0.0.1", self.port)))
                    self.statuses["silent connection opened"] += 1
                self.stop.wait(0.05)
        for s in silent:
            s.close()


def _closed(conn: socket.socket) -> bool:
    conn.setblocking(False)
    try:
        data = conn.recv(65536)
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        conn.setblocking(True)
    if data:
        conn.close()
        return True
    conn.close()
    return True


def soak(server: Server, url: str, bodies: list[bytes], clients: int, total: int,
         workdir: Path) -> dict:
    stream = BadStream(server.port, bad_inputs(bodies[0]))
    rss_before = server.rss_mb()
    written_before = server.written_bytes()
    tmp_before = sorted(server.tmpdir.rglob("*"))
    peak = [rss_before]
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.wait(1.0):
            peak.append(server.rss_mb())

    threads = [threading.Thread(target=stream.run, args=(bodies[1],), daemon=True),
               threading.Thread(target=sample, daemon=True)]
    for t in threads:
        t.start()
    row = run_ab(url, bodies[2], clients, total, workdir)
    stream.stop.set()
    sampling.set()
    for t in threads:
        t.join(timeout=120)
    peak.append(server.rss_mb())
    return {
        "row": row,
        "bad": stream.statuses,
        "unexpected": stream.unexpected,
        "rss_before": rss_before,
        "rss_peak": max(peak),
        "rss_after": peak[-1],
        "written": server.written_bytes() - written_before,
        "tmp_new": [str(p) for p in sorted(server.tmpdir.rglob("*")) if p not in tmp_before],
    }


def machine() -> str:
    try:
        cpu = next(line.split(":", 1)[1].strip()
                   for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = "unknown CPU"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{os.cpu_count()} CPUs ({cpu}), load average {load:.1f} at the start"


def serve_runtime(serve_args: list[str]) -> str | None:
    """The engine the served command names (``--runtime X`` or ``--runtime=X``), if any, so
    the predictor rows use the engine the server will."""
    for i, arg in enumerate(serve_args):
        if arg.startswith("--runtime="):
            return arg.split("=", 1)[1]
        if arg == "--runtime" and i + 1 < len(serve_args):
            return serve_args[i + 1]
    return None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    serve_args: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, serve_args = argv[:cut], argv[cut + 1 :]
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--patches", type=Path, required=True,
                        help="folder of real Kaggle patches (searched recursively)")
    parser.add_argument("--clients", type=int, action="append", help="default 1, 16, 64")
    parser.add_argument("--requests", type=int, default=5000, help="per client level")
    parser.add_argument("--predictor-seconds", type=float, default=5.0)
    parser.add_argument("--soak-requests", type=int, default=20000)
    parser.add_argument("--soak-clients", type=int, default=64)
    parser.add_argument("--no-soak", action="store_true")
    args = parser.parse_args(argv)
    if shutil.which("ab") is None:
        raise SystemExit("ab not found: apt-get install -y apache2-utils")
    clients = args.clients or [1, 16, 64]

    console.print(machine(), highlight=False)
    patches = real_patches(args.patches, 256)
    bodies = [multipart(p) for p in patches]
    runtime = serve_runtime(serve_args)
    rows, engine = predictor_rows(args.bundle, patches, args.predictor_seconds, runtime)
    port = free_port()
    url = f"http://127.0.0.1:{port}/predict"
    with tempfile.TemporaryDirectory(prefix="idcscan-load-") as tmp:
        workdir = Path(tmp)
        (workdir / "server-tmp").mkdir()
        server = start_server(args.bundle, port, serve_args, workdir / "server-tmp")
        try:
            health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=30).json()
            for i, c in enumerate(clients):
                rows.append(run_ab(url, bodies[i % len(bodies)], c, args.requests, workdir))
            result = None if args.no_soak else soak(
                server, url, bodies, args.soak_clients, args.soak_requests, workdir
            )
            health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=30).json()
        finally:
            stop_server(server)

    card = health["model"]
    console.print(
        f"[bold]{card['name']}[/] ({card['backbone']}, input {card['input_size']} px), "
        f"`idcscan serve` {' '.join(serve_args) or '(defaults)'}; real 50x50 PNG patches",
        highlight=False,
    )
    table = Table(title="Predictor alone vs idcscan serve (same run)")
    for col in ("what", "clients", "count", "errors", "per second", "p50 ms", "p99 ms"):
        table.add_column(col, justify="left" if col == "what" else "right")
    all_rows = rows + ([result["row"]] if result else [])
    for r in all_rows:
        table.add_row(
            r.what + (" [soak + bad inputs]" if result and r is result["row"] else ""),
            r.clients, f"{r.count:,}", str(r.errors), f"{r.rate:,.0f}",
            "-" if r.p50_ms is None else f"{r.p50_ms:.0f}",
            "-" if r.p99_ms is None else f"{r.p99_ms:.0f}",
        )
    console.print(table)
    served_by = health["runtime"]
    console.print(f"predictor alone: {engine}; each server worker: {served_by['engine']} "
                  f"{served_by['precision']}, {served_by['threads']} thread(s)", highlight=False)
    console.print(f"batching in the last worker asked: {health['batching']}", highlight=False)

    served = {int(r.clients): r for r in rows if r.clients != "-"}
    checks = []
    if 16 in served:
        checks.append((">= 500 requests/s with 16 clients", served[16].rate >= 500))
    if 1 in served:
        checks.append(("p50 <= 5 ms with 1 client", served[1].p50_ms <= 5))
    checks.append(("0 errors", all(r.errors == 0 for r in all_rows)))
    if result:
        growth = result["rss_peak"] / result["rss_before"] - 1
        fives = sum(n for k, n in result["bad"].items() if re.search(r": 5\d\d$", k))
        console.print("bad inputs answered during the soak:", highlight=False)
        for key, n in sorted(result["bad"].items()):
            console.print(f"  {key} x{n}", highlight=False)
        console.print(
            f"server RSS: {result['rss_before']:.0f} MB after warm-up, peak "
            f"{result['rss_peak']:.0f} MB ({growth:+.1%}), {result['rss_after']:.0f} MB at the "
            f"end; written to storage during the soak: {result['written']:,} bytes; new files "
            f"in its TMPDIR: {len(result['tmp_new'])}",
            highlight=False,
        )
        checks += [
            ("soak: 0 failed", result["row"].errors == 0),
            ("soak: 0 5xx, every bad input answered as expected",
             fives == 0 and not result["unexpected"]),
            ("soak: RSS growth <= 25% after warm-up", growth <= 0.25),
            ("soak: nothing written to disk", result["written"] == 0 and not result["tmp_new"]),
        ]
        for line in result["unexpected"][:20]:
            console.print(f"  [red]unexpected:[/] {line}", highlight=False)
    for name, ok in checks:
        console.print(f"{'[green]met[/]' if ok else '[red]MISSED[/]'}  {name}", highlight=False)
    console.print("ab reports latency in whole milliseconds.", style="dim")
    console.print(f"[yellow]{DISCLAIMER}[/]", highlight=False)
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    raise SystemExit(main())
