"""CLI: ``idcscan serve BUNDLE`` runs the web service and dashboard (no torch)."""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path

import typer

from idcscan.cli.app import app, console, print_disclaimer
from idcscan.cli.arguments import BUNDLE_HELP, apply_runtime, runtime_option
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
    bundle: Path = typer.Argument(
        Path("default"), help=BUNDLE_HELP + " Default: default.", show_default=False),
    host: str = typer.Option("127.0.0.1", help="Interface to listen on (0.0.0.0: all)."),
    port: int = typer.Option(5000, min=1, max=65535, help="TCP port."),
    max_upload_mb: float = typer.Option(20.0, min=0.001, help="Largest accepted upload (MB)."),
    workers: int = typer.Option(
        0, min=0, help="Server processes, each with its own model (0: one per CPU core)."
    ),
    max_batch: int = typer.Option(32, min=1, help="Most patches scored in one model call."),
    access_log: bool = typer.Option(
        False, "--access-log/--no-access-log", help="Log one line per request."
    ),
    slides: Path | None = typer.Option(
        None, help="Folder of whole slides to browse (searched recursively): a slide browser at "
        "/browse and a deep-zoom viewer with the IDC map.",
    ),
    maps: Path | None = typer.Option(
        None, help="Where maps made from the viewer are kept (default: ~/.cache/idcscan/maps).",
    ),
    runtime: str | None = runtime_option(),
) -> None:
    """Serve the dashboard and JSON API (/predict, /predict/batch, /health; docs at /docs).
    Research use only."""
    from idcscan.runtime.bundle import load_bundle
    from idcscan.server.runtime import default_workers, run_server
    from idcscan.server.state import ServerSettings

    loaded = load_bundle(bundle)  # refuse a bad bundle before binding anything
    apply_runtime(runtime)  # every worker process reads it from the environment
    if slides is not None and not slides.is_dir():
        raise IdcscanError(f"--slides {slides} is not a folder; give the folder of your slides.")
    _check_port(host, port)
    settings = ServerSettings(max_upload_mb=max_upload_mb, max_batch=max_batch)
    # With --slides too: map jobs and their progress live on disk beside the maps
    # (server.map_jobs), so any worker process can answer a browser's progress bar.
    workers = workers or default_workers()
    shown = f"[{host}]" if ":" in host else host
    if host in ("0.0.0.0", "::"):
        shown = "127.0.0.1"
    card = loaded.card
    console.print(
        f"[bold]idcscan[/] serving [cyan]{card.name}[/] {card.version} ({card.backbone}) "
        f"at [bold underline]http://{shown}:{port}/[/]  (API docs: http://{shown}:{port}/docs)"
        f", {workers} worker process{'es' if workers > 1 else ''}",
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
    if slides is not None:
        from idcscan.server.routes.viewer import ENV_MAPS, ENV_SLIDES

        # Every server process builds its viewer from these (see viewer_routes.get_viewer).
        os.environ[ENV_SLIDES] = str(slides.resolve())
        os.environ[ENV_MAPS] = str(maps.resolve()) if maps else ""
    run_server(loaded, host, port, settings, workers=workers, access_log=access_log)
