"""The model card as a person reads it, rendered from model.json (and an evaluation report).

model.json stays complete for machines; this module picks what a reader needs and says it in
words: class names, what the model reads, which data and patients, the decision convention
with the review threshold stated once, validation numbers with a small confusion-matrix table,
and test-set metrics with confidence intervals when an ``idcscan evaluate`` report of THIS
bundle exists (matched by the ONNX sha256, so a stale report is never shown). No absolute
paths: folders are named by their last part.

``readable_card`` returns plain data (sections of label/value rows) that the dashboard draws
as HTML and ``card_markdown`` prints as Markdown (``idcscan card``), so both say the same.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path, PurePath, PureWindowsPath
from typing import Any

from idcscan import DISCLAIMER
from idcscan.runtime.bundle import ModelCard
from idcscan.runtime.labels import CONTEXT_SIGMA, area_threshold
from idcscan.runtime.labels import CLASS_NAMES, DECISION_THRESHOLD, number, percent
from idcscan.runtime.shipped_card import shipped_sections

#: Where ``find_report`` looks for an evaluation report, relative to the bundle folder.
REPORT_CANDIDATES = ("report", "../report", "../../report")
REPORT_METRICS = "metrics.json"

_METRICS = (
    ("auc", "ROC AUC"),
    ("pr_auc", "PR AUC"),
    ("balanced_accuracy", "Balanced accuracy"),
    ("sensitivity", "Sensitivity (IDC found)"),
    ("specificity", "Specificity (non-IDC cleared)"),
    ("precision", "Precision (PPV)"),
    ("ece", "Calibration error (ECE)"),
)


def find_report(bundle_dir: str | Path, card: ModelCard) -> Path | None:
    """The folder of an ``idcscan evaluate`` report of this bundle, if one lies nearby."""
    base = Path(bundle_dir)
    for relative in REPORT_CANDIDATES:
        folder = (base / relative).resolve()
        metrics = folder / REPORT_METRICS
        if not metrics.is_file():
            continue
        try:
            summary = json.loads(metrics.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if (summary.get("bundle") or {}).get("onnx_sha256") == card.onnx_sha256:
            return folder
    return None


def load_report(folder: Path | None) -> dict[str, Any] | None:
    if folder is None:
        return None
    return json.loads((folder / REPORT_METRICS).read_text())


def _name(path: Any) -> str:
    """A folder named by its last part: cards travel, absolute paths mean nothing elsewhere."""
    return PurePath(str(path)).name if path else "unknown"


def without_paths(value: Any) -> Any:
    """A card's data with every absolute path cut to its last part, for answers that leave
    the machine (``/health``): where the data and runs lay says who trained it and how the
    server's disks are laid out, and means nothing to a reader elsewhere."""
    if isinstance(value, dict):
        return {k: without_paths(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_paths(v) for v in value]
    if isinstance(value, str):
        if value.startswith("\\") or (len(value) > 2 and value[1:3] in (":\\", ":/")):
            return PureWindowsPath(value).name or value
        if value.startswith(("/", "~")):
            return PurePath(value).name or value
    return value


def _when(created: str) -> str:
    """ISO time as a reader writes it (2026-12-05 23:08 UTC); anything else as recorded."""
    try:
        moment = datetime.fromisoformat(created)
    except (TypeError, ValueError):
        return str(created)
    if moment.tzinfo is not None:
        return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return moment.strftime("%Y-%m-%d %H:%M")


def _confusion(
    matrix: list[list[int]], caption: str,
    columns: tuple[str, str] = ("called IDC Negative", "called IDC Positive"),
) -> dict[str, Any]:
    (tn, fp), (fn, tp) = matrix
    return {
        "caption": caption,
        "columns": ["", *columns],
        "rows": [["true non-IDC", f"{tn:,}", f"{fp:,}"], ["true IDC", f"{fn:,}", f"{tp:,}"]],
    }


def validation_use(select: str, calibration: str, threshold_rule: str,
                   train_on_val: bool = False) -> str:
    """What the validation patients decided, for "Use of splits": a reader judges the
    validation figures by whether they also chose what they measure."""
    if train_on_val:
        return ("train and validation splits, i.e. every patient; the validation figures are "
                "in-sample (those patients were trained on) and only monitored training")
    uses = []
    if select == "best":
        uses.append("checkpoint choice")
    if calibration == "temperature":
        uses.append("temperature")
    if threshold_rule == "balanced":
        uses.append("review threshold")
    if uses:
        used = ", ".join(uses[:-1]) + (" and " if len(uses) > 1 else "") + uses[-1]
        return f"train split; validation split used for {used}; test split untouched"
    return ("train split; validation split only measured (no checkpoint, temperature or "
            "threshold was chosen on it); test split untouched")


def _use_of_splits(card: ModelCard) -> str | None:
    """From the recorded recipe where there is one (bundles before it was derived carry a
    sentence that named every use whether or not the recipe made it)."""
    config = (card.training or {}).get("config") or {}
    if all(k in config for k in ("select", "calibration", "threshold_rule")):
        return validation_use(config["select"], config["calibration"], config["threshold_rule"],
                              bool(config.get("train_on_val")))
    return (card.data or {}).get("trained_on")


_DATA_LABELS = {"content_sha256": "Content sha256 (every patch's name and bytes)"}


def _data_section(card: ModelCard) -> dict[str, Any]:
    data = card.data or {}
    rows: list[list[str]] = []
    if data.get("source"):
        rows.append(["Source", _name(data["source"])])
    if card.demo:
        rows.append(["Kind", "SYNTHETIC patches (demo): never real tissue"])
    patients = data.get("patients_per_split") or {}
    counts = data.get("counts") or {}
    if patients:
        parts = []
        for split, label in (("train", "train"), ("val", "validation"), ("test", "test")):
            if patients.get(split):
                n = (counts.get(split) or {}).get("total")
                parts.append(f"{label} {patients[split]}" + (f" ({n:,} patches)" if n else ""))
        rows.append(["Patients", " · ".join(parts)])
    if data.get("n_patients") and isinstance(data.get("n_patches"), int):
        rows.append(["In all", f"{data['n_patients']} patients, {data['n_patches']:,} patches"])
    if data.get("split_by"):
        seed = data.get("split_seed")
        rows.append(["Split", f"by {data['split_by']}" + (f", seed {seed}" if seed is not None
                                                          else "")
                     + ": no patient is in two splits"])
    use = _use_of_splits(card)
    if use:
        rows.append(["Use of splits", str(use)])
    for key, value in data.items():
        if key in ("source", "path", "counts", "patients_per_split", "split_by", "split_seed",
                   "trained_on", "n_patients", "n_patches", "val_frac", "test_frac",
                   "prepared_by"):
            continue
        if isinstance(value, (str, int, float)) and not str(value).startswith("/"):
            rows.append([_DATA_LABELS.get(key, key.replace("_", " ").capitalize()), str(value)])
    return {"title": "Training data", "rows": rows or [["Source", "not recorded"]]}


def _validation_section(card: ModelCard) -> dict[str, Any] | None:
    val = (card.metrics or {}).get("validation")
    if not isinstance(val, dict):
        return None
    rows = [[label, number(val.get(key))] for key, label in _METRICS if key in val]
    in_sample = bool(((card.training or {}).get("config") or {}).get("train_on_val"))
    section: dict[str, Any] = {
        "title": "Validation (in-sample: these patients were trained on too)" if in_sample
        else "Validation (patients held out from training)",
        "rows": rows,
    }
    if val.get("n_patients"):
        section["note"] = (f"{val.get('n_patches', 0):,} patches from {val['n_patients']} "
                           "patients; sensitivity, specificity and precision at the review "
                           "threshold.")
    if val.get("confusion_matrix"):
        section["confusion"] = _confusion(val["confusion_matrix"],
                                          "Validation patches at the review threshold",
                                          ("not flagged", "flagged for review"))
    return section


def _test_section(report: dict[str, Any], link: str | None) -> dict[str, Any]:
    ci = report.get("ci95") or {}
    rows = []
    for key, label in _METRICS:
        if key not in report:
            continue
        low, high = (ci.get(key) or [None, None])[:2]
        interval = "" if low is None else f" ({low:.3f}–{high:.3f})"
        rows.append([label, number(report.get(key)) + interval])
    data = report.get("data") or {}
    section: dict[str, Any] = {
        "title": f"Test set ({report.get('split', 'test')} split), with 95% CIs",
        "rows": rows,
        "note": (f"{data.get('n_patches', report.get('n_patches', 0)):,} patches from "
                 f"{data.get('n_patients', report.get('n_patients', '?'))} patients; the call at "
                 f"P(IDC) ≥ {percent(report.get('threshold', DECISION_THRESHOLD))}; never used "
                 "in training; intervals resample whole patients."),
    }
    if report.get("confusion_matrix"):
        section["confusion"] = _confusion(
            report["confusion_matrix"],
            f"Test patches, called at P(IDC) ≥ {percent(report.get('threshold', 0.5))}",
        )
    if link:
        section["link"] = {"href": link, "text": "Full evaluation report"}
    return section


def calibration_text(method: str, temperature: float) -> str:
    """What P(IDC) means for this bundle, in words (it differs with the training recipe)."""
    if method == "none":
        return ("none: P(IDC) is class-balanced. The loss weighted IDC and non-IDC patches "
                "equally, so P(IDC) is the probability of IDC if both were equally common: "
                "the evidence in the patch, not the IDC share of a slide. 50% balances "
                "sensitivity and specificity.")
    if method == "temperature":
        return (f"temperature scaling (T = {temperature:.3f}) after removing the class "
                "weighting, so P(IDC) is calibrated to the training set's IDC share.")
    return method


def _slide_area_text(card: ModelCard) -> str:
    threshold, _ = area_threshold(card)
    why = ("IDC more likely than not at the IDC share the model was trained on; P(IDC) is "
           "class-balanced, so 50% would over-count IDC area") if threshold != 0.5 else (
           "IDC more likely than not")
    return (f"each tile's P(IDC) is read with its neighbours (sigma {CONTEXT_SIGMA:g} patch) "
            f"and counts towards the IDC area from {percent(threshold)}: {why}.")


def stain_text(stain: dict[str, Any] | None) -> str:
    """How the bundle normalises stain colour before it scores, in words (empty: not at all)."""
    if not stain:
        return ""
    if stain.get("method") == "macenko":
        return ("Macenko, stains estimated per group: per slide in slide maps, per patient in "
                "evaluate, per --stain-group in predict (default each image), per image in "
                "/predict.")
    if stain.get("per_member"):
        return "Reinhard (lαβ), per patch, each fold member with its own target."
    return "Reinhard (lαβ), per patch, to a target fitted on the training patches."


def tta_views(card: ModelCard, requested: bool = False) -> tuple[int, bool]:
    """(views each answer averages, whether the graph averages them itself): a graph with TTA
    always averages its own views, so asking for TTA at run time then changes nothing."""
    tta = (card.model_extra or {}).get("tta")
    if isinstance(tta, dict) and tta.get("in_graph"):
        return int(tta.get("views", 8)), True
    return (8 if requested else 1), False


def tta_in_use(card: ModelCard, requested: bool = False) -> str:
    """What averaging ran, in words, for outputs and reports (from the card, not the flag)."""
    views, in_graph = tta_views(card, requested)
    if in_graph:
        return f"{views} flipped/rotated views averaged inside the model (always on)"
    if views > 1:
        return f"{views} flips/rotations averaged at run time (--tta)"
    return "off (one view per patch)"


def tta_text(tta: dict[str, Any] | None) -> str:
    if not isinstance(tta, dict) or not tta.get("in_graph"):
        return "none (one view per patch)"
    views = int(tta.get("views", 8))
    return (f"{tta.get('reduce', f'mean logit over {views} views')}, inside the model: every "
            f"answer averages {views} flipped/rotated views of the patch ({views} model "
            "evaluations each)")


def review_text(card: ModelCard) -> str:
    """How the review threshold was set, from model.json's ``training.threshold_rule``: a
    fixed threshold must not read as one fitted to patients, and one equal to the call flags
    exactly the IDC Positive calls."""
    rule = str((card.training or {}).get("threshold_rule") or "")
    head = f"Flagged for review when P(IDC) ≥ {percent(card.threshold)}: "
    fixed = rule.startswith("fixed")
    if fixed and abs(card.threshold - DECISION_THRESHOLD) < 1e-9:
        return head + ("a fixed threshold, the same as the call, so exactly the IDC Positive "
                       "patches are flagged; nothing was fitted to patients for it.")
    text = head + ("a fixed threshold (not fitted to patients)." if fixed else
                   "the review threshold ("
                   + (rule or "chosen on validation patients for balanced sensitivity and "
                      "specificity") + ").")
    if card.threshold < DECISION_THRESHOLD:
        text += " It catches more IDC at the cost of false alarms."
    return text


def readable_card(
    card: ModelCard, report: dict[str, Any] | None = None, report_link: str | None = None
) -> dict[str, Any]:
    """What a person needs to know about the model, as plain data (see module doc)."""
    calibration = card.calibration
    model_rows = [
        ["Classes", f"1 = {CLASS_NAMES[1]}, 0 = {CLASS_NAMES[0]}"],
        ["Reads", f"{card.patch_size} × {card.patch_size} px H&E patches at {card.mpp:g} µm/px "
                  f"(resized to {card.input_size} × {card.input_size} px inside the model)"],
        ["Backbone", card.backbone],
        ["Calibration", calibration_text(calibration.method, calibration.temperature)],
    ]
    tta = (card.model_extra or {}).get("tta")
    model_rows.append(["Test-time augmentation", tta_text(tta)])
    stain = stain_text(card.preprocessing.get("stain_norm"))
    if stain:
        model_rows.append(["Stain normalisation", stain])
    if card.created:
        model_rows.append(["Exported", _when(card.created)])
    decision = {
        "call": f"IDC Positive when P(IDC) ≥ {percent(DECISION_THRESHOLD)} (IDC more likely "
                "than not); confidence is the probability of the class called.",
        "review": review_text(card),
        "review_threshold": card.threshold,
        "slide_area": _slide_area_text(card),
    }
    sections = [{"title": "Model", "rows": model_rows}, _data_section(card)]
    sections += shipped_sections(card)
    validation = _validation_section(card)
    if validation:
        sections.append(validation)
    if report is not None:
        sections.append(_test_section(report, report_link))
    return {
        "title": f"{card.name} {card.version}",
        "demo": card.demo,
        "summary": ("Demo model trained on synthetic data: its numbers say nothing about real "
                    "tissue. " if card.demo else "")
        + f"Classifies {card.patch_size} × {card.patch_size} px H&E breast-tissue patches as "
        "IDC Positive or IDC Negative (invasive ductal carcinoma).",
        "decision": decision,
        "sections": sections,
        "has_report": report is not None,
        "disclaimer": DISCLAIMER,
    }


def card_markdown(readable: dict[str, Any]) -> str:
    """The readable card as Markdown (``idcscan card``; also fine in a README)."""
    lines = [f"# Model card: {readable['title']}", "", f"> **{readable['disclaimer']}**", "",
             readable["summary"], "", "## Decision", "",
             f"- **Call:** {readable['decision']['call']}",
             f"- **Review flag:** {readable['decision']['review']}",
             f"- **Slide maps:** {readable['decision']['slide_area']}", ""]
    for section in readable["sections"]:
        lines += [f"## {section['title']}", "", "| | |", "|---|---|"]
        lines += [f"| {a} | {b} |" for a, b in section["rows"]]
        lines.append("")
        if section.get("note"):
            lines += [section["note"], ""]
        confusion = section.get("confusion")
        if confusion:
            lines += [f"{confusion['caption']}:", "",
                      "| " + " | ".join(confusion["columns"]) + " |", "|---|---|---|"]
            lines += ["| " + " | ".join(row) + " |" for row in confusion["rows"]]
            lines.append("")
        if section.get("link"):
            lines += [f"{section['link']['text']}: {section['link']['href']}", ""]
    return "\n".join(lines)
