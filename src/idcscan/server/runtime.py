"""Running the app under uvicorn the way ``idcscan serve`` does: worker processes, the event
loop and HTTP parser, timeouts.

Why these choices (measured in docs/BENCHMARKS.md):

* one worker process per core, each with its own model (engine: ``idcscan.runtime.engine``)
  on its share of the cores: a 50x50 patch costs the network about as much CPU as the HTTP,
  multipart, PNG and JSON work around it, and that Python work holds the GIL, so a single
  process cannot keep more than one core busy with it;
* uvloop and httptools (C event loop and HTTP parser) when installed; uvicorn picks them;
* ``GuardedHttpToolsProtocol``: a deadline on request headers (slowloris), the body deadline
  being enforced where uploads are read;
* no access log by default: one formatted line per request is a measurable share of a
  request that costs about a millisecond (``--access-log`` turns it on; ``?token=`` values
  are blanked in it, ``server.security.RedactTokens``);
* TLS by uvicorn itself when given a certificate (``--certfile/--keyfile``).

The security policy (host names, token) reaches worker processes the way the bundle does,
through the environment (``IDCSCAN_ALLOWED_HOSTS``, ``IDCSCAN_TOKEN``), which only this user
and root can read.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import uvicorn

from idcscan.runtime.bundle import Bundle
from idcscan.server.protocols import IMPORT_STRING
from idcscan.server.security import ENV_ALLOWED_HOSTS, ENV_TOKEN, SecurityPolicy
from idcscan.server.state import ServerSettings

ENV_BUNDLE = "IDCSCAN_SERVE_BUNDLE"
ENV_SETTINGS = "IDCSCAN_SERVE_SETTINGS"
ENV_THREADS = "IDCSCAN_SERVE_THREADS"


def usable_cores() -> int:
    """Cores this process may run on (affinity and container CPU sets included)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def default_workers() -> int:
    """One server process per usable core."""
    return usable_cores()


def threads_per_worker(workers: int) -> int:
    """Inference threads per worker: the cores shared out, at least one each."""
    return max(1, usable_cores() // max(1, workers))


def uvicorn_config(
    app: object, host: str, port: int, settings: ServerSettings, workers: int = 1,
    access_log: bool = False, log_level: str = "info", factory: bool = False,
    certfile: str | Path | None = None, keyfile: str | Path | None = None,
) -> uvicorn.Config:
    config = uvicorn.Config(
        app,  # type: ignore[arg-type]
        host=host,
        port=port,
        factory=factory,
        workers=workers,
        loop="auto",
        http=IMPORT_STRING,
        access_log=access_log,
        log_level=log_level,
        timeout_keep_alive=5,
        ssl_certfile=str(certfile) if certfile else None,
        ssl_keyfile=str(keyfile) if keyfile else None,
    )
    # Read by GuardedHttpToolsProtocol; pickled with the config into worker processes.
    config.header_timeout_s = settings.header_timeout_s  # type: ignore[attr-defined]
    return config


def run_server(
    bundle: Bundle, host: str, port: int, settings: ServerSettings, workers: int,
    access_log: bool = False, security: SecurityPolicy | None = None,
    certfile: str | Path | None = None, keyfile: str | Path | None = None,
) -> None:
    """Serve ``bundle`` until interrupted (Ctrl+C, SIGTERM)."""
    security = security or SecurityPolicy()
    tls = {"certfile": certfile, "keyfile": keyfile}
    if workers <= 1:
        from idcscan.runtime.predictor import Predictor
        from idcscan.server.app import create_app
        from idcscan.server.routes.viewer import configure_viewer_from_env

        predictor = Predictor(bundle, threads=threads_per_worker(1))
        app = create_app(predictor, settings=settings, security=security)
        configure_viewer_from_env(app)
        uvicorn.Server(uvicorn_config(app, host, port, settings, access_log=access_log,
                                      **tls)).run()
        return

    from uvicorn.supervisors import Multiprocess

    from idcscan.runtime.engine import ENV_RUNTIME, auto_runtime, resolve_runtime
    from idcscan.runtime.predictor import made_for_onnxruntime

    # Every worker must score with the same engine (/health reports one): settle "auto" here,
    # once, by compiling the graph, and hand the workers the answer.
    if resolve_runtime(None) == "auto":
        os.environ[ENV_RUNTIME] = auto_runtime(bundle.onnx_path, made_for_onnxruntime(bundle))
    # Each worker process builds its own app and model from these (spawned, not forked).
    os.environ[ENV_BUNDLE] = str(Path(bundle.path).resolve())
    os.environ[ENV_THREADS] = str(threads_per_worker(workers))
    os.environ[ENV_SETTINGS] = json.dumps(dataclasses.asdict(settings))
    os.environ[ENV_ALLOWED_HOSTS] = " ".join(security.allowed_hosts)
    if security.token:
        os.environ[ENV_TOKEN] = security.token
    else:
        os.environ.pop(ENV_TOKEN, None)
    config = uvicorn_config(
        "idcscan.server.app:create_app_from_env", host, port, settings, workers=workers,
        access_log=access_log, factory=True, **tls,
    )
    Multiprocess(config, sockets=[config.bind_socket()]).run()
