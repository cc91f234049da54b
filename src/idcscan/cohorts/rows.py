"""What a cohort folder holds, as rows: one per slide (mapped or failed) and one per patient.

Read only from the files slide mode leaves (``<slide>/summary.json`` and ``.failed/``), so the
report, the page and the command line agree on what a folder contains.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from idcscan.errors import IdcscanError
from idcscan.maps.caveats import summary_caveats
from idcscan.maps.failures import read_failures
from idcscan.maps.slide_map import SUMMARY_JSON


@dataclass
class SlideRow:
    slide: str
    status: str  # "ok" or "failed"
    path: str = ""
    error: str = ""
    summary: dict[str, Any] = field(default_factory=dict)
    patient: str | None = None

    @property
    def caveats(self) -> list[str]:
        """What to know before trusting this slide's numbers (``maps.caveats``): most tissue
        left out by QC and why, an assumed or coarse scale."""
        return summary_caveats(self.summary) if self.status == "ok" else []

    @property
    def qc(self) -> dict[str, Any]:
        """Artefact-QC fields of summary.json (``qc_*`` keys), when slide mode wrote any."""
        # qc_* counts only: the "qc" key holds the rule settings, not findings
        return {k: v for k, v in self.summary.items() if k.lower().startswith("qc_")}


def collect_slides(out_dir: Path) -> list[SlideRow]:
    """Finished slides (a folder with summary.json) and failed ones, sorted by name."""
    rows: dict[str, SlideRow] = {}
    for summary_path in sorted(out_dir.glob(f"*/{SUMMARY_JSON}")):
        try:
            summary = json.loads(summary_path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        name = summary_path.parent.name
        rows[name] = SlideRow(name, "ok", path=str(summary.get("path", "")), summary=summary)
    for failure in read_failures(out_dir):
        if failure["slide"] not in rows:
            rows[failure["slide"]] = SlideRow(
                failure["slide"], "failed", path=failure.get("path", ""),
                error=failure.get("error", ""),
            )  # fmt: skip
    return [rows[k] for k in sorted(rows)]


def read_patients(path: Path) -> dict[str, str]:
    """slide -> patient from a CSV with columns ``slide`` and ``patient``."""
    try:
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            columns = set(reader.fieldnames or [])
            if not {"slide", "patient"} <= columns:
                raise IdcscanError(
                    f"{path} needs the columns slide and patient (it has: "
                    f"{', '.join(sorted(columns)) or 'none'})."
                )
            return {r["slide"].strip(): r["patient"].strip() for r in reader if r["slide"]}
    except OSError as exc:
        raise IdcscanError(f"Cannot read the patient table {path}: {exc}") from None


def patient_rows(rows: list[SlideRow], patients: dict[str, str]) -> list[dict[str, Any]]:
    """Per patient: slides, mapped, failed, missing, areas and the IDC fraction of all tiles."""
    by_patient: dict[str, dict[str, Any]] = {}
    present = {r.slide: r for r in rows}
    for slide, patient in sorted(patients.items()):
        entry = by_patient.setdefault(
            patient, {"patient": patient, "slides": 0, "mapped": 0, "failed": 0, "missing": [],
                      "tissue_mm2": 0.0, "idc_mm2": 0.0, "tiles": 0, "idc_tiles": 0,
                      "max_fraction": None},
        )  # fmt: skip
        entry["slides"] += 1
        row = present.get(slide)
        if row is None:
            entry["missing"].append(slide)
        elif row.status == "failed":
            entry["failed"] += 1
        else:
            s = row.summary
            entry["mapped"] += 1
            entry["tissue_mm2"] += float(s.get("tissue_area_mm2", 0.0))
            entry["idc_mm2"] += float(s.get("idc_area_mm2", 0.0))
            entry["tiles"] += int(s.get("n_tiles", 0))
            entry["idc_tiles"] += int(s.get("n_idc_tiles", 0))
            frac = float(s.get("idc_fraction", 0.0))
            entry["max_fraction"] = max(frac, entry["max_fraction"] or 0.0)
    for entry in by_patient.values():
        entry["idc_fraction"] = entry["idc_tiles"] / entry["tiles"] if entry["tiles"] else None
    return [by_patient[k] for k in sorted(by_patient)]
