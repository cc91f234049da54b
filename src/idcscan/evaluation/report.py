"""report.md: the evaluation as a person reads it, rendered from the metrics.json contents.

The report is built only from the summary dict that metrics.json holds, so the two can never
tell different stories.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from idcscan import DISCLAIMER
from idcscan.runtime.model_card import calibration_text

#: Display name and a short gloss for every scalar metric, in table order.
METRIC_LABELS: dict[str, str] = {
    "auc": "ROC AUC",
    "pr_auc": "PR AUC (average precision)",
    "accuracy": "Accuracy",
    "balanced_accuracy": "Balanced accuracy",
    "f1": "F1 (IDC)",
    "sensitivity": "Sensitivity (recall, IDC found)",
    "specificity": "Specificity (non-IDC cleared)",
    "precision": "Precision (PPV)",
    "ece": "Expected calibration error",
}

# Keys a model card may use to say how its threshold was chosen (training area's choice).
_THRESHOLD_KEYS = ("threshold_method", "threshold_rule", "threshold_source", "threshold_note")


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _flatten(d: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    items: list[tuple[str, Any]] = []
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            items.extend(_flatten(value, f"{name}."))
        elif isinstance(value, (int, float, str, bool)) or value is None:
            items.append((name, value))
    return items


def _runtime_row(runtime: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    """Which engine scored: bf16 and fp32 agree to about 0.001 AUC, not to the last digit."""
    if not runtime:
        return []
    return [("Scored by", f"{runtime['engine']} ({runtime['precision']})")]


def threshold_note(bundle: Mapping[str, Any]) -> str:
    """How the bundle's threshold came about, in words, from whatever the card records."""
    sources = [bundle.get("card_extra") or {}, bundle.get("card_training") or {}]
    for source in sources:
        for key in _THRESHOLD_KEYS:
            if source.get(key):
                return str(source[key])
    return "chosen when the model was trained (see model.json)"


def calibration_row(bundle: Mapping[str, Any]) -> str:
    """What P(IDC) is for this bundle, from its card's ``calibration.method`` (metrics.json
    written before the method was recorded: temperature scaling, the only method then)."""
    method = str(bundle.get("calibration") or "temperature")
    return calibration_text(method, float(bundle.get("temperature", 1.0)))


def probability_kind(bundle: Mapping[str, Any]) -> str:
    method = str(bundle.get("calibration") or "temperature")
    if method == "temperature":
        return "temperature-calibrated P(IDC)"
    if method == "none":
        return "class-balanced P(IDC) (no calibration: see the Model table)"
    return f"P(IDC) calibrated by {method}"


def tta_row(summary: Mapping[str, Any]) -> str:
    """The averaging that ran: recorded by evaluate (``tta_in_use``) from the bundle's card,
    else (older metrics.json) what the flag asked for."""
    if summary.get("tta_in_use"):
        return str(summary["tta_in_use"])
    return "8 dihedral views, mean logit" if summary.get("tta") else "off"


def _table(rows: list[tuple[str, str]], header: tuple[str, str] = ("", "")) -> list[str]:
    lines = [f"| {header[0]} | {header[1]} |", "|---|---|"]
    lines += [f"| {a} | {b} |" for a, b in rows]
    return lines


def render_report(summary: Mapping[str, Any], patients: list[Mapping[str, Any]] | None = None,
                  max_patients: int = 40) -> str:
    """Markdown report; figures are referenced by file name next to report.md."""
    bundle = summary["bundle"]
    data = summary["data"]
    ci = summary["ci95"]
    ci_info = summary.get("ci", {})
    level = int(round(100 * ci_info.get("level", 0.95)))
    threshold = summary["threshold"]
    title = "# idcscan evaluation report"
    if bundle.get("demo"):
        title += ": DEMO model trained on synthetic data"
    lines = [
        title,
        "",
        f"> **{DISCLAIMER}**",
        "",
        f"Model `{bundle['name']}` evaluated on the **{summary['split']}** split of "
        f"`{data['path']}`: {data['n_patches']:,} patches from {data['n_patients']} patients. "
        f"Created {summary.get('created', '')} by idcscan {summary.get('idcscan_version', '')}.",
        "",
    ]
    if bundle.get("demo"):
        lines += ["> This is a **demo model** trained on synthetic data (never real tissue); "
                  "its numbers say nothing about what idcscan can do on real data.", ""]

    lines += ["## Model", ""]
    lines += _table([
        ("Bundle", f"{bundle['name']} {bundle['version']} (`{bundle['path']}`)"),
        ("Backbone", f"`{bundle['backbone']}`"),
        ("Input", f"{bundle['patch_size']} px patches at {bundle['mpp']} µm/px, resized to "
                  f"{bundle['input_size']} px inside the ONNX graph"),
        ("Calibration", calibration_row(bundle)),
        ("Call", f"IDC Positive when P(IDC) >= {threshold:.2%}"),
        ("Review flag", f"P(IDC) >= {bundle['threshold']:.2%} (the bundle's review threshold)"),
        ("ONNX sha256", f"`{bundle['onnx_sha256']}`"),
        *_runtime_row(summary.get("runtime")),
    ])
    card_metrics = _flatten(bundle.get("card_metrics") or {})
    if card_metrics:
        lines += ["", "Metrics recorded in the model card at training time:", ""]
        lines += _table([(f"`{k}`", _fmt(v)) for k, v in card_metrics[:30]], ("Metric", "Value"))

    n_idc = data["n_idc"]
    lines += [
        "",
        "## Data",
        "",
        f"- Split: **{summary['split']}** ({data['n_patients']} patients, "
        f"{data['n_patches']:,} patches, {n_idc:,} IDC = {data['idc_prevalence']:.1%})",
        f"- Test-time augmentation: {tta_row(summary)}",
        "",
        "## Metrics",
        "",
        f"Patch-level metrics of the call (IDC Positive at P(IDC) >= {threshold:.2%}), the same "
        f"call every idcscan output makes, with {level}% confidence intervals.",
        "",
        f"| Metric | Value | {level}% CI |",
        "|---|---|---|",
    ]
    for key, label in METRIC_LABELS.items():
        low, high = ci.get(key, [None, None])
        interval = "n/a" if low is None else f"{low:.4f} - {high:.4f}"
        lines.append(f"| {label} | {_fmt(summary.get(key))} | {interval} |")
    (tn, fp), (fn, tp) = summary["confusion_matrix"]
    lines += [
        "",
        f"Intervals: {ci_info.get('method', 'bootstrap over patients')} "
        f"({ci_info.get('n_boot', '?')} resamples, seed {ci_info.get('seed', '?')}). "
        "Patches of one patient share tissue, stain and scanner, so they are not independent "
        "samples; resampling whole patients gives honest (wider) intervals than resampling "
        f"patches. With {data['n_patients']} patients the intervals are only as precise as "
        "that many patients allow. ECE uses "
        f"{summary.get('ece_bins', 15)} equal-width bins of P(IDC).",
        "",
        "Confusion matrix (patches):",
        "",
        "| | predicted no IDC | predicted IDC |",
        "|---|---|---|",
        f"| **true no IDC** | {tn:,} (TN) | {fp:,} (FP) |",
        f"| **true IDC** | {fn:,} (FN) | {tp:,} (TP) |",
        "",
        "## Decision convention",
        "",
        f"A patch is called IDC Positive when its P(IDC) is at least {threshold:.2%} "
        "(IDC more likely than not), and its confidence is the probability of the class called. "
        f"The review flag marks P(IDC) >= {bundle['threshold']:.2%}, the bundle's review "
        f"threshold: {threshold_note(bundle)}. It was fixed before this evaluation, so the "
        f"{summary['split']} data did not influence it. Probabilities are "
        f"{probability_kind(bundle)}, exactly as `idcscan predict` and the server report them.",
        "",
    ]
    review = summary.get("review")
    if review:
        (rtn, rfp), (rfn, rtp) = review["confusion_matrix"]
        lines += [
            f"At the review threshold: sensitivity {_fmt(review.get('sensitivity'))}, "
            f"specificity {_fmt(review.get('specificity'))}, precision "
            f"{_fmt(review.get('precision'))}; {rtp + rfp:,} patches flagged ({rtp:,} IDC, "
            f"{rfp:,} false alarms), {rfn:,} IDC patches not flagged.",
            "",
        ]
    lines += [
        "## Figures",
        "",
        "![ROC curve](roc.png) ![Precision-recall curve](pr.png)",
        "",
        "![Confusion matrix](confusion_matrix.png) ![Reliability diagram](calibration.png)",
        "",
    ]
    if patients:
        shown = sorted(patients, key=lambda r: r["accuracy"])[:max_patients]
        cut = f", the {max_patients} worst" if len(patients) > max_patients else ""
        lines += [
            "## Patients",
            "",
            f"Per-patient results (worst accuracy first{cut}; all in `patients.csv`).",
            "",
            "| Patient | Patches | IDC fraction (true) | IDC fraction (called) | AUC | Accuracy |",
            "|---|---|---|---|---|---|",
        ]
        for r in shown:
            lines.append(
                f"| {r['patient']} | {r['n_patches']:,} | {r['idc_fraction_true']:.3f} | "
                f"{r['idc_fraction_pred']:.3f} | {_fmt(r['auc'], 3)} | {r['accuracy']:.3f} |"
            )
        lines.append("")
    lines += [
        "## Files",
        "",
        "- `metrics.json`: every number above, machine-readable",
        "- `predictions.csv`: P(IDC) per patch (row, patient, x, y, label, probability)",
        "- `patients.csv`: per-patient table",
        "",
        f"*{DISCLAIMER}*",
        "",
    ]
    return "\n".join(lines)
