"""Which dihedral views a test-time augmentation averages, shared by the in-graph TTA (torch)
and the predictor's run-time TTA (numpy), so both see the same views in the same order.

Views are indexed in one order everywhere: rotations by 0, 90, 180 and 270 degrees (0-3),
then the horizontal flip of each (4-7). The smaller sets are the usual flip TTAs (as in
ttach): identity + horizontal flip, and the four flips {identity, horizontal, vertical,
both}. Each is a subgroup of the square's symmetries, so no view is favoured over another.
"""

from __future__ import annotations

TTA_VIEW_SETS: dict[int, tuple[int, ...]] = {2: (0, 4), 4: (0, 2, 4, 6), 8: tuple(range(8))}


def view_indices(views: int) -> tuple[int, ...]:
    """The view indices of a TTA of ``views`` views; anything but 2, 4 or 8 is an error."""
    if views not in TTA_VIEW_SETS:
        raise ValueError(f"TTA averages {', '.join(map(str, TTA_VIEW_SETS))} views, not {views}.")
    return TTA_VIEW_SETS[views]


def tta_card(views: int) -> dict[str, object]:
    """What model.json says when the graph averages ``views`` dihedral views itself."""
    names = {2: "identity and horizontal flip", 4: "identity, horizontal and vertical flips "
             "and both", 8: "the 8 symmetries of the square"}
    return {"in_graph": True, "views": views, "reduce": f"mean logit over {names[views]}",
            "cam": "identity view"}
