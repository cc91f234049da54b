"""The parts of a model card that a shipped model carries beyond any bundle's: what to expect
on new patients, its limits, how it was built, and the one-line summary ``idcscan models``
shows. Plain data for ``model_card.readable_card`` (the CLI, the card page and /health read
the same rows), kept apart so the general card stays about any bundle."""

from __future__ import annotations

from typing import Any

from idcscan.runtime.bundle import ModelCard
from idcscan.runtime.labels import number


def _interval(expected: dict[str, Any], key: str) -> str:
    low, high = (expected.get("ci95") or {}).get(key) or (None, None)
    return "" if low is None else f" (95% CI {number(low)}–{number(high)})"


def expected_section(expected: dict[str, Any]) -> dict[str, Any]:
    """What to expect on new patients, from cross-validation: an estimate with its interval."""
    rows = [[label, number(expected[key]) + _interval(expected, key)]
            for key, label in (("auc", "AUC"), ("balanced_accuracy", "Balanced accuracy"),
                               ("f1", "F1")) if expected.get(key) is not None]
    rows.append(["How it was measured", str(expected.get("method", "not recorded"))])
    return {"title": "Expected accuracy on new patients (an estimate)", "rows": rows}


def limits_section(limits: list[Any]) -> dict[str, Any]:
    return {"title": "Limits", "rows": [[str(i), str(text)] for i, text in
                                        enumerate(limits, start=1)]}


def build_section(build: dict[str, Any]) -> dict[str, Any]:
    """How to make this very model again: the command, the commit and the data's hash."""
    recipe = build.get("recipe") or {}
    members = recipe.get("members") or [{}]
    settings = "; ".join(", ".join(f"{k} {v}" for k, v in m.items()) or "the default recipe"
                         for m in members)
    rows = [["Command", str(build.get("command") or "not recorded")],
            ["Git commit", str(build.get("git_commit") or "not recorded")],
            ["Recipe", f"{len(members)} model{'s' if len(members) > 1 else ''} ({settings}), "
                       f"{recipe.get('finetune_epochs', '?'):g} passes over the patches, "
                       f"{recipe.get('tta_views', '?')} TTA views, seed {recipe.get('seed', '?')}"
             if recipe else "not recorded"],
            ["Data content sha256", str(build.get("data_content_sha256") or "not recorded")]]
    return {"title": "How it was built", "rows": rows}


def shipped_sections(card: ModelCard) -> list[dict[str, Any]]:
    extra = card.model_extra or {}
    sections = []
    if isinstance(extra.get("expected_accuracy"), dict):
        sections.append(expected_section(extra["expected_accuracy"]))
    if extra.get("limits"):
        sections.append(limits_section(extra["limits"]))
    if isinstance(extra.get("build"), dict):
        sections.append(build_section(extra["build"]))
    return sections


def shipped_summary(card: ModelCard) -> dict[str, str]:
    """A few words each on a model's network, data and expected accuracy (``idcscan
    models``): short enough for a narrow terminal; the card has the rest."""
    extra = card.model_extra or {}
    tta = extra.get("tta") or {}
    members = len((extra.get("ensemble") or {}).get("members") or []) or 1
    network = (f"{card.backbone}, {card.input_size} px"
               + (f", {members} models averaged" if members > 1 else "")
               + (f", {tta.get('views')} TTA views" if tta.get("in_graph") else ""))
    data = card.data or {}
    patients, patches = data.get("n_patients"), data.get("n_patches")
    dataset = data.get("dataset") or data.get("source") or "not recorded"
    trained = ", ".join(x for x in (
        dataset.split(" (")[0].split(":")[0],
        f"{patients} patients" if patients else "",
        f"{patches:,} patches" if isinstance(patches, int) else "") if x)
    expected = extra.get("expected_accuracy") or {}
    if expected.get("auc") is not None:
        folds = expected.get("folds")
        estimate = (f"AUC {expected['auc']:.3f}{_interval(expected, 'auc')}, balanced accuracy "
                    f"{number(expected.get('balanced_accuracy'))}"
                    f"{_interval(expected, 'balanced_accuracy')}; "
                    + (f"{folds}-fold " if folds else "") + "patient-grouped CV, an estimate")
    else:
        estimate = "not measured"
    return {"network": network, "data": trained, "expected": estimate}
