"""``GET /api/examples`` and ``GET /examples/patches/{name}``: the real example patches that
ship with idcscan (``idcscan.data.examples``), for the Patches page's "Try an example".

A new user can click real H&E before having any data. The list names each patch's label in
the data set and where the patches come from; a name is served only when it is on that list,
so no other file is reachable through this route.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from fastapi import APIRouter
from fastapi.responses import FileResponse, JSONResponse

from idcscan.runtime.shipped import examples_dir, examples_info

router = APIRouter()


@lru_cache(maxsize=1)
def _examples() -> dict[str, Any]:
    folder = examples_dir()
    if folder is None:
        return {"patches": [], "source": "", "note": ""}
    info = examples_info()
    patches = [{"name": Path(p["file"]).name, "label": p["label"], "patient": p["patient"],
                "url": f"/examples/patches/{Path(p['file']).name}",
                "path": str(folder / p["file"])} for p in info.get("patches", [])]
    return {"patches": patches, "source": info.get("source", ""), "note": info.get("note", "")}


@router.get("/api/examples", summary="The example patches that ship with idcscan")
def list_examples() -> dict[str, Any]:
    """Each example patch's file name, its label in the data set, its patient and its URL."""
    data = _examples()
    return {"patches": [{k: v for k, v in p.items() if k != "path"} for p in data["patches"]],
            "source": data["source"], "note": data["note"]}


@router.get("/examples/patches/{name}", include_in_schema=False, response_model=None)
def example_patch(name: str) -> FileResponse | JSONResponse:
    for patch in _examples()["patches"]:
        if patch["name"] == name:
            return FileResponse(patch["path"], media_type="image/png")
    return JSONResponse({"error": f"No example patch named {name!r}."}, status_code=404)
