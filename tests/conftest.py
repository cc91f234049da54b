"""Shared fixtures: tiny models and data the suite builds itself (never real patients)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

# The in-process transports name the server "testserver" (Starlette's TestClient) and "test"
# (the httpx ASGI tests): declared as its host names, the way a deployment declares its own
# (IDCSCAN_ALLOWED_HOSTS, the environment form of `serve --allowed-host`; loopback names need
# no declaring). A token in the shell that runs the suite must not change what tests see.
os.environ["IDCSCAN_ALLOWED_HOSTS"] = "testserver test"
os.environ.pop("IDCSCAN_TOKEN", None)


@pytest.fixture(autouse=True)
def _keep_the_engine_choice():
    """``--runtime`` sets ``IDCSCAN_RUNTIME`` in the process (as it must, for the workers a
    command starts); a CLI test run in-process must not choose the engine for later tests."""
    import os

    from idcscan.runtime.engine import ENV_RUNTIME

    before = os.environ.get(ENV_RUNTIME)
    yield
    if before is None:
        os.environ.pop(ENV_RUNTIME, None)
    else:
        os.environ[ENV_RUNTIME] = before


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An exported bundle from a randomly initialised Lite0 at 32 px: real ONNX, tiny cost."""
    import torch

    from idcscan.training.export import export_bundle
    from idcscan.training.network import IDCNet
    from idcscan.preprocessing import Preprocessing

    torch.manual_seed(0)
    net = IDCNet("tf_efficientnet_lite0", Preprocessing(input_size=32)).eval()
    out = tmp_path_factory.mktemp("bundle")
    export_bundle(
        net,
        out,
        threshold=0.5,
        metrics={"validation": {"auc": 0.5}},
        data={"source": "random weights (test fixture)"},
    )
    return out


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def synthetic_kaggle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic dataset in the exact Kaggle layout: 12 patients x 40 patches, seed 0."""
    from idcscan.data.synthetic import generate_dataset

    root = tmp_path_factory.mktemp("kaggle") / "IDC_regular_ps50_idx5"
    generate_dataset(root, patients=12, patches_per_patient=40, seed=0)
    return root


@pytest.fixture(scope="session")
def prepared_data(synthetic_kaggle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``synthetic_kaggle`` packed by ``prepare`` (default fractions, seed 0); read-only."""
    from idcscan.data.packing import prepare

    out = tmp_path_factory.mktemp("prepared")
    prepare(synthetic_kaggle, out, val_frac=0.15, test_frac=0.15, seed=0, progress=False)
    return out


# --- Browser tests: Debian's Chromium through Playwright, against the real app on uvicorn ---

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """test-artifacts/ at the repository root: screenshots kept for a person to look at."""
    path = Path(__file__).resolve().parents[1] / "test-artifacts"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium, per module: Playwright's sync API keeps an event loop running while
    it is open, which would break later tests that call asyncio.run.

    Skipped on a machine without Chromium, but a failure in CI (which installs it)."""
    import os

    problem = None
    if not CHROMIUM.exists():
        problem = f"{CHROMIUM} is missing (Debian: apt-get install chromium)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            problem = "the playwright package is not installed (pip install -e '.[dev]')"
    if problem is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"Browser test cannot run in CI: {problem}.")
        pytest.skip(f"Browser test skipped: {problem}.")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="session")
def live_server():
    """Serve a FastAPI app with uvicorn on a free loopback port in a thread: ``with live_server(app) as url``."""
    import socket
    import threading
    import time
    from contextlib import contextmanager

    import uvicorn

    @contextmanager
    def serve(app):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        srv = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        deadline = time.monotonic() + 300  # a hang guard, not a speed test
        while not srv.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            srv.should_exit = True
            thread.join(timeout=10)
            sock.close()

    return serve


@pytest.fixture(scope="session")
def two_class_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A demo bundle whose calls split: a random Lite0 at 32 px with its output bias moved so
    that half of ``patches/*.png`` (8 random 50 x 50 patches, seed 21) have P(IDC) >= 50%,
    and a review threshold of 0.3 like a real Youden threshold. ``ROOT/bundle``, ``ROOT/patches``.
    """
    import torch
    from PIL import Image

    from idcscan.training.export import export_bundle
    from idcscan.training.network import IDCNet
    from idcscan.preprocessing import Preprocessing

    root = tmp_path_factory.mktemp("two-class")
    rng = np.random.default_rng(21)
    patches = [rng.integers(0, 256, (50, 50, 3), dtype=np.uint8) for _ in range(8)]
    (root / "patches").mkdir()
    for i, arr in enumerate(patches):
        Image.fromarray(arr).save(root / "patches" / f"patch{i}.png")
    torch.manual_seed(0)
    net = IDCNet("tf_efficientnet_lite0", Preprocessing(input_size=32)).eval()
    with torch.no_grad():
        logits = net(torch.from_numpy(np.stack(patches)))
        ordered = torch.sort(logits).values
        net.head.fc2.bias -= (ordered[3] + ordered[4]) / 2  # 4 below 0, 4 above
    export_bundle(
        net, root / "bundle", threshold=0.3, demo=True,
        metrics={"validation": {"auc": 0.5, "sensitivity": 0.5, "specificity": 0.5,
                                "n_patches": 8, "n_patients": 2,
                                "confusion_matrix": [[2, 2], [2, 2]]}},
        data={"source": "/somewhere/secret/kaggle", "patients_per_split": {"train": 4,
              "val": 2, "test": 2}, "split_by": "patient", "split_seed": 0},
    )
    return root


@pytest.fixture(scope="session")
def trained_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny IDCNet that tells the two textures apart, exported as a real bundle. Trained once
    per session, however many modules use it."""
    import torch

    from slide_helpers import texture

    from idcscan.training.export import export_bundle
    from idcscan.training.network import IDCNet
    from idcscan.preprocessing import Preprocessing

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    net = IDCNet("test_efficientnet", Preprocessing(input_size=32))
    optimiser = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(12):
        labels = rng.integers(0, 2, 16)
        patches = np.stack([texture(rng, 50, 50, "idc" if y else "normal") for y in labels])
        logits = net(torch.from_numpy(patches))
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            logits, torch.from_numpy(labels).float()
        )
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    # a dozen steps leave BatchNorm's running statistics far from the data: re-estimate them
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.reset_running_stats()
                module.momentum = None  # cumulative average over the passes below
        for _ in range(4):
            labels = rng.integers(0, 2, 32)
            kinds = ["idc" if y else "normal" for y in labels]
            net(torch.from_numpy(np.stack([texture(rng, 50, 50, k) for k in kinds])))
    out = tmp_path_factory.mktemp("slide-bundle")
    export_bundle(net.eval(), out, threshold=0.5, data={"source": "two synthetic textures"})
    return out


@pytest.fixture(scope="session")
def painted_map(trained_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``slide_helpers``' painted pyramid (``ROOT/slides/scan.tif``), mapped whole by
    ``trained_bundle`` with the default options into ``ROOT/maps/scan/``; read-only."""
    from slide_helpers import paint_slide, write_pyramid

    from idcscan.maps.run import analyse_slide
    from idcscan.runtime.predictor import Predictor

    root = tmp_path_factory.mktemp("painted")
    (root / "slides").mkdir()
    write_pyramid(root / "slides" / "scan.tif", paint_slide())
    analyse_slide(Predictor(trained_bundle), root / "slides" / "scan.tif", root / "maps")
    return root
