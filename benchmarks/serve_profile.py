"""Where a /predict request's CPU goes: the model versus everything around it.

    python benchmarks/serve_profile.py BUNDLE --patches KAGGLE_DIR [--requests 2000]
        [--clients 1 --clients 16]
    py-spy record --gil -r 250 -f raw -o profile.txt -- \\
        python benchmarks/serve_profile.py BUNDLE --patches KAGGLE_DIR

Runs the real app (``create_app``: routing, multipart reading, decoding, micro-batching,
rendering, JSON) on an in-process ASGI loop (uvloop when installed), with no sockets, so the
figures are the server's own work. CPU time is counted, not wall time, so other load on the
machine inflates the figures far less than it does a throughput test: ``model`` is the CPU
the ONNX Runtime calls took (one thread, on the batching thread), ``rest`` is everything else
the process spent per request. Under py-spy with ``--gil`` the samples show which Python code
holds the interpreter (ONNX Runtime releases it while it computes).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from serve_load import multipart, real_patches  # noqa: E402

from idcscan import DISCLAIMER  # noqa: E402
from idcscan.runtime.predictor import Predictor  # noqa: E402
from idcscan.server.app import create_app  # noqa: E402

BOUNDARY = "idcscanbenchboundary7d1e"


class CountingPredictor(Predictor):
    """The bundle's predictor, adding up the CPU time of its own calls."""

    model_cpu_s = 0.0

    def predict_proba(self, patches, tta=False):
        start = time.thread_time()
        try:
            return super().predict_proba(patches, tta=tta)
        finally:
            self.model_cpu_s += time.thread_time() - start


def _scope(length: int) -> dict:
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/predict", "raw_path": b"/predict", "query_string": b"",
        "root_path": "", "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2), "state": {},
        "headers": [
            (b"host", b"bench"),
            (b"content-type", f"multipart/form-data; boundary={BOUNDARY}".encode()),
            (b"content-length", str(length).encode()),
        ],
    }


async def _one(app, body: bytes) -> None:
    delivered = False

    async def receive() -> dict:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # nothing more: the client stays connected
        return {}

    status = []

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])

    await app(_scope(len(body)), receive, send)
    assert status == [200], status


async def _measure(app, predictor, bodies, clients: int, total: int) -> tuple[float, float]:
    for i in range(clients * 4):  # warm-up
        await _one(app, bodies[i % len(bodies)])
    predictor.model_cpu_s = 0.0
    start = time.process_time()
    for round_ in range(total // clients):
        await asyncio.gather(
            *(_one(app, bodies[(round_ * clients + i) % len(bodies)]) for i in range(clients))
        )
    done = (total // clients) * clients
    cpu = time.process_time() - start
    return 1000 * predictor.model_cpu_s / done, 1000 * (cpu - predictor.model_cpu_s) / done


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--patches", type=Path, required=True)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, action="append")
    args = parser.parse_args()
    bodies = [multipart(p) for p in real_patches(args.patches, 64)]
    predictor = CountingPredictor(args.bundle, threads=1)
    app = create_app(predictor)
    try:
        import uvloop

        run = uvloop.run
    except ImportError:
        run = asyncio.run
    print("CPU milliseconds per /predict request (in-process ASGI, one ONNX Runtime thread)")
    print(f"{'clients':>8} {'model':>8} {'rest':>8} {'total':>8}  mean batch")
    for clients in args.clients or [1, 16]:
        model, rest = run(_measure(app, predictor, bodies, clients, args.requests))
        stats = app.state.idcscan.batcher.stats.as_dict()
        print(f"{clients:>8} {model:>8.2f} {rest:>8.2f} {model + rest:>8.2f}  "
              f"{stats['mean_batch']}")
    print(DISCLAIMER)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
