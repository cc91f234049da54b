"""What a reader must know before trusting a slide's numbers, in words, kept with them.

A map can be computed correctly and still mean little: artefact QC may have left out most of
the tissue (an "IDC in 0.0% of 0 tissue tiles" that is no finding at all), or the scale may be
coarser than the model was trained at. These sentences go into ``summary.json``
(``warnings``), ``summary.csv``, the command's summary line, the cohort report and the pages,
so no front end shows the number without them.
"""

from __future__ import annotations

from idcscan.preprocessing import TRAINING_MPP

#: share of the tissue tiles left out by artefact QC above which the map is said to be partial
QC_MAJORITY = 0.5
#: a scale this much coarser than the training scale is said to lose detail
COARSE_FACTOR = 1.25

#: why QC may have left out most of the tissue, by the kind that left out most
QC_REASONS = {
    "blur": "Blur on most of the tissue usually means a wrong scale (an image at a finer "
            "scale than the one used looks blurred when its tiles are shrunk: check --mpp), "
            "or a scan out of focus.",
    "pen": "Marker ink covers most of the tissue; a scan without the ink marks would be "
           "mapped.",
    "fold": "Most tissue tiles look folded or near black; check the scan's exposure and "
            "the scale.",
    "bubble": "Most tissue tiles look like air bubbles or glass; check the scan.",
}


def qc_caveat(n_scored: int, qc_tiles: dict[str, int]) -> str | None:
    """A sentence when QC left out more than ``QC_MAJORITY`` of the tissue tiles, with why."""
    left = sum(int(v) for v in qc_tiles.values())
    total = n_scored + left
    if total == 0 or left <= QC_MAJORITY * total:
        return None
    kinds = sorted(((n, k) for k, n in qc_tiles.items() if n), reverse=True)
    by_kind = ", ".join(f"{k} {n:,}" for n, k in kinds)
    main = kinds[0][1]
    return (f"Artefact QC left out {left:,} of {total:,} tissue tiles ({left / total:.0%}: "
            f"{by_kind}), so this map covers only {n_scored:,} of them and its IDC share "
            f"describes that part alone. {QC_REASONS.get(main, '')}").rstrip()


def scale_caveat(mpp: float, mpp_source: str, training_mpp: float) -> str | None:
    """A sentence when the scale was assumed (older folders) or is coarser than training."""
    if mpp_source == "assumed":
        return (f"Scale assumed ({mpp:g} µm/px), not recorded in the file nor given: the map "
                "and the areas are right only if the image really is at that scale.")
    if mpp > training_mpp * COARSE_FACTOR:
        return (f"Mapped at {mpp:g} µm/px, coarser than the training scale ({training_mpp:g} "
                "µm/px): tiles were enlarged, so the model saw less detail than it was "
                "trained on.")
    return None


def map_caveats(n_scored: int, qc_tiles: dict[str, int], mpp: float, mpp_source: str,
                training_mpp: float) -> list[str]:
    """Every caveat of one map, most serious first."""
    found = (qc_caveat(n_scored, qc_tiles), scale_caveat(mpp, mpp_source, training_mpp))
    return [text for text in found if text]


def summary_caveats(summary: dict) -> list[str]:
    """The caveats of a ``summary.json`` as read back: its own ``warnings``, or for a folder
    written before they were recorded, the ones its numbers imply."""
    if isinstance(summary.get("warnings"), list):
        return [str(w) for w in summary["warnings"]]
    qc = summary.get("qc_tiles") if isinstance(summary.get("qc_tiles"), dict) else {}
    try:
        return map_caveats(int(summary.get("n_tiles", 0)), qc, float(summary.get("mpp", 0)),
                           str(summary.get("mpp_source", "")), TRAINING_MPP)
    except (TypeError, ValueError):
        return []
