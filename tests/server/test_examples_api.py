"""The example patches a new user clicks before having data: listed with their labels and
provenance, served by name, and nothing else reachable through the route."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from idcscan.runtime.shipped import examples_dir

EXAMPLES = examples_dir()
pytestmark = pytest.mark.skipif(EXAMPLES is None, reason="examples not installed")


@pytest.fixture(scope="module")
def client(tiny_bundle: Path):
    from idcscan.server.app import create_app

    with TestClient(create_app(tiny_bundle)) as c:
        yield c


def test_the_list_names_each_patch_its_label_patient_and_provenance(client: TestClient) -> None:
    info = json.loads((EXAMPLES / "examples.json").read_text())
    body = client.get("/api/examples").json()
    assert set(body) == {"patches", "source", "note"}
    assert "CC0" in body["source"] and "Janowczyk" in body["source"]
    assert "training data" in body["note"]  # not a measure of accuracy, and it says so
    assert [p["name"] for p in body["patches"]] == [Path(p["file"]).name for p in info["patches"]]
    for patch in body["patches"]:
        assert set(patch) == {"name", "label", "patient", "url"}  # no server path leaks
        assert patch["label"] in ("IDC", "non-IDC")
        image = client.get(patch["url"])
        assert image.status_code == 200 and image.headers["content-type"] == "image/png"
        assert image.content[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("name", ["examples.json", "..%2Fexamples.json", "nope.png"])
def test_only_listed_patches_are_served(client: TestClient, name: str) -> None:
    answer = client.get(f"/examples/patches/{name}")
    assert answer.status_code == 404
    assert "error" in answer.json()
