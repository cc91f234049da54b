"""The cohort report says when a slide's numbers need a caveat, beside its status."""

from __future__ import annotations

import json
from pathlib import Path

from idcscan.cohorts.report import write_report


def folder(out: Path, name: str, **summary: object) -> None:
    (out / name).mkdir(parents=True)
    base = {"slide": name, "path": f"/in/{name}.png", "width": 100, "height": 100, "mpp": 4.0,
            "mpp_source": "metadata", "stride": 50, "tile_size": 50, "n_tiles": 4,
            "n_idc_tiles": 1, "idc_fraction": 0.25, "tissue_area_mm2": 0.16,
            "idc_area_mm2": 0.04, "qc_tiles": {"pen": 0, "blur": 0, "fold": 0, "bubble": 0}}
    (out / name / "summary.json").write_text(json.dumps({**base, **summary}))


def test_qc_emptied_and_guessed_scale_slides_are_not_plain_ok(tmp_path: Path) -> None:
    emptied = ("Artefact QC left out 2,271 of 2,271 tissue tiles (100%: blur 2,271), so this "
               "map covers only 0 of them.")
    folder(tmp_path, "clean", warnings=[])
    folder(tmp_path, "snap40x", n_tiles=0, n_idc_tiles=0, idc_fraction=0.0,
           warnings=[emptied])
    folder(tmp_path, "older", mpp_source="assumed")  # written when a scale could be guessed
    page = write_report(tmp_path).read_text()
    rows = {r.split('data-slide="')[1].split('"')[0]: r for r in page.split("<tr")[1:]
            if 'data-slide="' in r}
    assert ">ok</span>" in rows["clean"] and "caveat" not in rows["clean"]
    assert "ok, with caveats" in rows["snap40x"] and "Artefact QC left out 2,271" in rows["snap40x"]
    assert "ok, with caveats" in rows["older"] and "Scale assumed (4 µm/px)" in rows["older"]
    assert "<b>2</b> with caveats" in page
