"""What ``rig compare`` writes: a CSV table, a JSON summary, a figure, and the section ``rig report`` shows.

``DIR/compare.csv``   one row per model × layer (r, R², raw and ceiling-normalised, with 95% intervals);
``DIR/compare.json``  the ceiling, each model's best layer, the paired tests, sessions and settings;
``DIR/compare.png``   cross-validated r against relative depth, one curve per model.
"""
from __future__ import annotations

import csv
import html
import json
import math
from pathlib import Path
from typing import Callable

import matplotlib

matplotlib.use("Agg")  # reports are made on headless machines
import matplotlib.pyplot as plt  # noqa: E402

from rig.predictivity.compare import Comparison, Interval, LayerScore  # noqa: E402

TABLE = "compare.csv"
SUMMARY = "compare.json"
FIGURE = "compare.png"
COLUMNS = ["model", "layer", "relative_depth", "features", "best",
           "r", "r_low", "r_high", "r2", "r2_low", "r2_high",
           "r_normalised", "r_normalised_low", "r_normalised_high",
           "r2_normalised", "r2_normalised_low", "r2_normalised_high"]


def _cells(interval: Interval | None) -> list[float | str]:
    if interval is None:
        return ["", "", ""]
    return [f"{interval.value:.4f}", f"{interval.low:.4f}", f"{interval.high:.4f}"]


def write_table(comparison: Comparison, path: Path) -> Path:
    """One row per model and layer."""
    best = comparison.best()
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        for s in comparison.scores:
            writer.writerow([s.model, s.layer, f"{s.depth:.3f}", s.features, int(best[s.model] is s),
                             *_cells(s.r), *_cells(s.r2), *_cells(s.r_normalised), *_cells(s.r2_normalised)])
    return path


def _interval_dict(interval: Interval | None) -> dict | None:
    return None if interval is None else {"value": interval.value, "low": interval.low, "high": interval.high}


def _score_dict(s: LayerScore) -> dict:
    return {"model": s.model, "layer": s.layer, "relative_depth": s.depth, "features": s.features,
            "r": _interval_dict(s.r), "r2": _interval_dict(s.r2), "r_normalised": _interval_dict(s.r_normalised),
            "r2_normalised": _interval_dict(s.r2_normalised)}


def summary(comparison: Comparison) -> dict:
    """The JSON summary (what the report section and a twin's provenance read)."""
    def clean(value):  # JSON has no NaN
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    return clean({
        "stimuli": comparison.stimuli,
        "sessions": comparison.sessions,
        "ceiling": comparison.ceiling.as_dict(),
        "best": {m: _score_dict(s) for m, s in comparison.best().items()},
        "tests": [{"a": t.a, "b": t.b, "difference_r": _interval_dict(t.difference), "p_value": t.p_value,
                   "verdict": t.verdict} for t in comparison.tests],
        "settings": comparison.settings,
        "seconds": comparison.seconds,
    })


def plot_depth(comparison: Comparison, path: Path) -> Path:
    """Cross-validated r (95% interval) against relative depth, one curve per model; best layers circled."""
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    best = comparison.best()
    for model in dict.fromkeys(s.model for s in comparison.scores):
        rows = sorted((s for s in comparison.scores if s.model == model), key=lambda s: s.depth)
        depth = [s.depth for s in rows]
        ax.plot(depth, [s.r.value for s in rows], marker="o", label=model)
        ax.fill_between(depth, [s.r.low for s in rows], [s.r.high for s in rows], alpha=0.2)
        ax.plot([best[model].depth], [best[model].r.value], "o", markersize=12, markerfacecolor="none",
                color="black")
    if math.isfinite(comparison.ceiling.max_r):
        ax.axhline(comparison.ceiling.max_r, color="grey", linestyle="--", label="noise ceiling (max r)")
    ax.set_xlabel("relative depth of the layer")
    ax.set_ylabel("cross-validated r")
    ax.set_title(f"predictivity of {comparison.stimuli} stimuli")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_outputs(comparison: Comparison, folder: Path) -> list[Path]:
    """The table, summary and figure in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / SUMMARY).write_text(json.dumps(summary(comparison), indent=2))
    return [write_table(comparison, folder / TABLE), folder / SUMMARY, plot_depth(comparison, folder / FIGURE)]


def report_section(folder: str | Path, img: Callable[[Path, str], str]) -> list[str]:
    """HTML of ``rig report --compare DIR``: the figure (through ``img``), best layers, tests and ceiling."""
    folder = Path(folder)
    if not (folder / SUMMARY).is_file():
        raise FileNotFoundError(f"--compare {folder}: no {SUMMARY} there; run `rig compare ... --out {folder}` first")
    try:
        data = json.loads((folder / SUMMARY).read_text())
        best, tests, ceiling = data["best"], data["tests"], data["ceiling"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"--compare {folder}: {SUMMARY} is not a rig compare summary ({exc})") from None

    def fmt(entry: dict | None) -> str:
        if not entry:
            return "&ndash;"
        return f"{entry['value']:.3f} [{entry['low']:.3f}, {entry['high']:.3f}]"

    lines = ["<h2>Which model sees like this neuron</h2>",
             f"<p class='note'>{data['stimuli']} stimuli; cross-validated ridge readouts of PCA'd features, "
             f"folds split by generation; 95% bootstrap intervals over stimuli (from {html.escape(str(folder))}).</p>"]
    if (folder / FIGURE).is_file():
        lines.append(img(folder / FIGURE, "cross-validated r against relative depth, one curve per model"))
    lines.append("<table><tr><th>model</th><th>best layer</th><th>r</th><th>R&sup2;</th><th>r / ceiling</th></tr>")
    for model, s in best.items():
        lines.append(f"<tr><td>{html.escape(model)}</td><td>{html.escape(s['layer'])}</td><td>{fmt(s['r'])}</td>"
                     f"<td>{fmt(s['r2'])}</td><td>{fmt(s['r_normalised'])}</td></tr>")
    lines.append("</table>")
    for t in tests:
        lines.append(f"<p>{html.escape(t['verdict'])}: difference in r {fmt(t['difference_r'])}, "
                     f"p = {t['p_value']:.3g}</p>")
    reliability = ceiling.get("reliability")
    lines.append(f"<p>Noise ceiling: reliability {reliability:.3f} (max r {ceiling['max_r']:.3f}) from "
                 f"{ceiling['repeated_stimuli']} repeated stimuli.</p>" if reliability is not None
                 else "<p>Noise ceiling: none.</p>")
    if ceiling.get("warning"):
        lines.append(f"<p><b>Warning:</b> {html.escape(ceiling['warning'])}</p>")
    return lines
