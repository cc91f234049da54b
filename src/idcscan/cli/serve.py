"""CLI: ``idcscan serve BUNDLE`` runs the web service and dashboard (no torch)."""

from __future__ import annotations

import errno
import json
import os
import socket
from pathlib import Path

import typer

from idcscan.cli.app import app, console, print_disclaimer
from idcscan.errors import IdcscanError


def _check_port(host: str, port: int) -> None:
    """Fail with a clear message before loading anything if the address is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise IdcscanError(
                    f"Port {port} on {host} is already in use; pick another with --port."
                ) from None
            raise IdcscanError(f"Cannot listen on {host}:{port}: {exc.strerror or exc}.") from None


@app.command()
def serve(
    bundle: Path = typer.Argument(..., help="Model bundle directory (model.onnx + model.json)."),
    host: str = typer.Option("127.0.0.1", help="Interface to listen on (0.0.0.0: all)."),
    port: int = typer.Option(5000, min=1, max=65535, help="TCP port."),
    max_upload_mb: float = typer.Option(20.0, min=0.001, help="Largest accepted upload (MB)."),
    workers: int = typer.Option(1, min=1, help="Server processes (each loads the model)."),
    max_batch: int = typer.Option(32, min=1, help="Most patches scored in one model call."),
    slides: Path | None = typer.Option(
        None, help="Folder of whole slides to browse (searched recursively): a slide browser at "
        "/browse and a deep-zoom viewer with the IDC map.",
    ),
    maps: Path | None = typer.Option(
        None, help="Where maps made from the viewer are kept (default: ~/.cache/idcscan/maps).",
    ),
) -> None:
    """Serve the dashboard and JSON API (/predict, /predict/batch, /health; docs at /docs).
    Research use only."""
    import uvicorn

    from idcscan.inference.bundle import load_bundle
    from idcscan.server.state import ServerSettings

    loaded = load_bundle(bundle)  # refuse a bad bundle before binding anything
    if slides is not None and not slides.is_dir():
        raise IdcscanError(f"--slides {slides} is not a folder; give the folder of your slides.")
    _check_port(host, port)
    settings = ServerSettings(max_upload_mb=max_upload_mb, max_batch=max_batch)
    shown = f"[{host}]" if ":" in host else host
    if host in ("0.0.0.0", "::"):
        shown = "127.0.0.1"
    card = loaded.card
    console.print(
        f"[bold]idcscan[/] serving [cyan]{card.name}[/] {card.version} ({card.backbone}) "
        f"at [bold underline]http://{shown}:{port}/[/]  (API docs: http://{shown}:{port}/docs)",
        highlight=False,
    )
    if slides is not None:
        console.print(
            f"Slides in [cyan]{slides}[/]: browse them at http://{shown}:{port}/browse",
            highlight=False,
        )
    print_disclaimer()
    if card.demo:
        console.print(
            "[bold black on yellow] DEMO MODEL [/] [bold yellow]This bundle was trained on "
            "synthetic data: its answers say nothing about real tissue.[/]",
            highlight=False,
        )

    if workers == 1:
        from idcscan.server.app import create_app

        served = create_app(loaded, settings=settings)
        if slides is not None:
            from idcscan.server.viewer_routes import configure_viewer

            configure_viewer(served, slides, maps)
        uvicorn.run(served, host=host, port=port, log_level="info")
        return
    if slides is not None:
        from idcscan.server.viewer_routes import ENV_MAPS, ENV_SLIDES

        os.environ[ENV_SLIDES] = str(slides.resolve())
        os.environ[ENV_MAPS] = str(maps.resolve()) if maps else ""
    os.environ["IDCSCAN_SERVE_BUNDLE"] = str(Path(bundle).resolve())
    # Workers share the cores: each ONNX Runtime session gets its slice, not all of them.
    os.environ["IDCSCAN_SERVE_THREADS"] = str(max(1, (os.cpu_count() or 1) // workers))
    os.environ["IDCSCAN_SERVE_SETTINGS"] = json.dumps(
        {"max_upload_mb": max_upload_mb, "max_batch": max_batch}
    )
    uvicorn.run(
        "idcscan.server.app:create_app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="info",
    )
