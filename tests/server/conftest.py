"""Fixtures the server tests share."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient


@pytest.fixture(scope="session")
def viewer_client(
    tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[Path], AbstractContextManager[TestClient]]:
    """``with viewer_client(slides) as client``: the app with ``--slides slides`` and a fresh
    maps folder, served in-process."""

    @contextmanager
    def make(slides: Path) -> Iterator[TestClient]:
        from idcscan.server.app import create_app
        from idcscan.server.routes.viewer import configure_viewer

        app = create_app(tiny_bundle)
        configure_viewer(app, slides, tmp_path_factory.mktemp("maps"))
        with TestClient(app) as client:
            yield client

    return make
