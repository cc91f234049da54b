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
    examples: bool = typer.Option(
        False, "--examples", help="Browse the real example section that ships with idcscan "
        "(one Kaggle patient's tissue, at 4 µm/px) instead of a --slides folder.",
    ),
    maps: Path | None = typer.Option(
        None, help="Where maps made from the viewer are kept (default: ~/.cache/idcscan/maps).",
    ),
    runtime: str | None = runtime_option(),
    allowed_host: list[str] = typer.Option(
        [], "--allowed-host", envvar="IDCSCAN_ALLOWED_HOSTS", metavar="NAME",
        help="A host name (or *.domain) the server answers to besides loopback ones and the "
        "address it listens on; repeatable. Others get 400 (a guard against DNS rebinding).",
    ),
    token: str | None = typer.Option(
        None, envvar="IDCSCAN_TOKEN", show_default=False,
        help="Require this token on every route but static files (Authorization: Bearer "
        "TOKEN, or ?token= once in the browser). Default: none on loopback, a generated one "
        "on any other address.",
    ),
    no_token: bool = typer.Option(
        False, "--no-token", help="Serve beyond loopback without a token (warned against)."
    ),
    certfile: Path | None = typer.Option(
        None, help="TLS certificate (PEM): serve https://."),
    keyfile: Path | None = typer.Option(None, help="The certificate's private key (PEM)."),
) -> None:
    """Serve the dashboard and JSON API (/predict, /predict/batch, /health; docs at /docs).
    Research use only."""
    from idcscan.runtime.bundle import load_bundle
    from idcscan.server.access import check_tls, plan_access
    from idcscan.server.runtime import default_workers, run_server
    from idcscan.server.state import ServerSettings

    loaded = load_bundle(bundle)  # refuse a bad bundle before binding anything
    apply_runtime(runtime)  # every worker process reads it from the environment
    if examples:
        from idcscan.runtime.shipped import examples_dir

        if slides is not None:
            raise IdcscanError("Give --slides or --examples, not both.")
        if examples_dir() is None:
            raise IdcscanError("This install has no example slides; give --slides DIR.")
        slides = examples_dir() / "slides"
    if slides is not None and not slides.is_dir():
        raise IdcscanError(f"--slides {slides} is not a folder; give the folder of your slides.")
    check_tls(certfile, keyfile)
    access = plan_access(host, port, token=token, no_token=no_token,
                         allowed_hosts=allowed_host, tls=certfile is not None)
    _check_port(host, port)
    settings = ServerSettings(max_upload_mb=max_upload_mb, max_batch=max_batch)
    # With --slides too: map jobs and their progress live on disk beside the maps
    # (server.map_jobs), so any worker process can answer a browser's progress bar.
    workers = workers or default_workers()
    card = loaded.card
    console.print(
        f"[bold]idcscan[/] serving [cyan]{card.name}[/] {card.version} ({card.backbone}) "
        f"at [bold underline]{access.urls[0]}[/]  (API docs: {access.bases[0]}/docs)"
        f", {workers} worker process{'es' if workers > 1 else ''}",
        highlight=False, soft_wrap=True,
    )
    for other in access.urls[1:]:
        console.print(f"  also at {other}", highlight=False, soft_wrap=True)
    if access.generated:
        console.print("A token was generated: open the address above (it carries the token) "
                      "or send the header Authorization: Bearer TOKEN. Give --token to choose "
                      "one.", highlight=False)
    if slides is not None:
        what = "The example section" if examples else f"Slides in [cyan]{slides}[/]"
        console.print(
            f"{what}: browse {'it' if examples else 'them'} at {access.url('/browse')}",
            highlight=False, soft_wrap=True,
        )
    for warning in access.warnings:
        console.print(f"[bold yellow]Warning:[/] {warning}", highlight=False)
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
    run_server(loaded, host, port, settings, workers=workers, access_log=access_log,
               security=access.policy, certfile=certfile, keyfile=keyfile)
