"""The monkey's behaviour in a session, for ``rig report``: trial outcomes, fixation, reward and gaze.

:func:`summarise_behavior` turns :func:`rig.behavior.tables.behavior_tables`
into numbers (pure, on arrays); the ``*_figure`` functions draw them and
return the matplotlib Figure, so tests can read what was drawn;
:func:`write_behavior` saves the figures as PNG and the numbers as CSV.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # reports are made on headless machines
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Circle  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from rig.behavior.outcomes import TrialOutcome  # noqa: E402
from rig.behavior.tables import BehaviorTables  # noqa: E402

__all__ = ["BehaviorReport", "BehaviorSummary", "acquire_figure", "gaze_density_figure", "outcome_figure",
           "summarise_behavior", "write_behavior"]

#: Bar colours per outcome, in stacking order.
OUTCOME_COLOURS = {TrialOutcome.COMPLETED: "#4a4", TrialOutcome.BROKE_FIXATION: "#d73",
                   TrialOutcome.NO_FIXATION: "#aaa", TrialOutcome.ABORTED: "#55a"}


@dataclass(frozen=True)
class BehaviorSummary:
    """What the trials, gaze and events of one session add up to."""

    #: Block indices, and per block the trials of each outcome, all trials, and those of unfinished blocks.
    blocks: np.ndarray
    counts: dict[TrialOutcome, np.ndarray]
    trials: np.ndarray
    unfinished: np.ndarray
    #: Time to acquire fixation (acquired - start), ms, of every trial that acquired it.
    acquire_ms: np.ndarray
    #: Reward pulses earned by trials and given by the operator ("manual_reward" events), and how many manual
    #: rewards; reward_ms is one pulse's valve-open time.
    earned_pulses: int
    manual_pulses: int
    manual_rewards: int
    reward_ms: float
    #: Time the monkey was not working, as the trial runner measured it (from its last acquired fixation to
    #: fixation offered again after the pause), and how many pauses.
    not_working_s: float
    not_working_pauses: int

    @property
    def total_trials(self) -> int:
        return int(self.trials.sum())

    @property
    def breaks_per_trial(self) -> float:
        """Trials that broke fixation, per trial (NaN without trials)."""
        broke = int(self.counts[TrialOutcome.BROKE_FIXATION].sum())
        return broke / self.total_trials if self.total_trials else float("nan")

    @property
    def block_breaks_per_trial(self) -> np.ndarray:
        """Per block, the trials that broke fixation per trial."""
        return self.counts[TrialOutcome.BROKE_FIXATION] / self.trials

    @property
    def acquire_quartiles_ms(self) -> tuple[float, float, float]:
        """(25th percentile, median, 75th percentile) of the time to acquire; NaN if no trial acquired."""
        if not len(self.acquire_ms):
            return (float("nan"),) * 3
        q25, q50, q75 = np.percentile(self.acquire_ms, [25, 50, 75])
        return float(q25), float(q50), float(q75)

    @property
    def total_pulses(self) -> int:
        return self.earned_pulses + self.manual_pulses

    @property
    def total_reward_ms(self) -> float:
        """Valve-open time of every pulse: pulses x reward_ms."""
        return self.total_pulses * self.reward_ms


def summarise_behavior(tables: BehaviorTables) -> BehaviorSummary:
    """Per-block outcome counts, time to acquire, reward and time not working, from a session's tables."""
    trials, events = tables.trials, tables.events
    blocks = np.unique(trials["block"])
    per_block = trials["block"][:, None] == blocks[None, :]
    counts = {o: (per_block & (trials["outcome"] == o)[:, None]).sum(axis=0) for o in TrialOutcome}
    acquired = np.isfinite(trials["acquired"])
    kinds = np.asarray(events["kinds"]).astype(str)
    values = np.asarray(events["values"], dtype=np.float64)
    manual = kinds == "manual_reward"
    not_working, not_working_pauses = _not_working(np.asarray(events["times"], dtype=np.float64), kinds, values)
    return BehaviorSummary(
        blocks=blocks, counts=counts, trials=per_block.sum(axis=0),
        unfinished=(per_block & trials["unfinished"].astype(bool)[:, None]).sum(axis=0),
        acquire_ms=(trials["acquired"][acquired] - trials["start"][acquired]) * 1000,
        earned_pulses=int(values[kinds == "reward"].sum()), manual_pulses=int(values[manual].sum()),
        manual_rewards=int(manual.sum()), reward_ms=float(tables.spec.get("reward_ms", float("nan"))),
        not_working_s=not_working, not_working_pauses=not_working_pauses)


def _not_working(times: np.ndarray, kinds: np.ndarray, values: np.ndarray) -> tuple[float, int]:
    """Seconds not working and the number of pauses.

    A ``not_working`` event's value is the time since the monkey last acquired
    fixation; the pause then lasts until the next ``offering_fixation`` (none:
    the session ended in the pause, which counts up to the event itself). The
    runner measures the next idle spell from that offer, so spells never overlap.
    """
    paused = kinds == "not_working"
    offered = np.sort(times[kinds == "offering_fixation"])
    ends = np.append(offered, np.nan)[np.searchsorted(offered, times[paused])]
    pauses = np.nan_to_num(ends - times[paused], nan=0.0)
    return float(values[paused].sum() + pauses.sum()), int(paused.sum())


# -- figures --------------------------------------------------------------------------------------------------


def outcome_figure(summary: BehaviorSummary, title: str = "") -> Figure:
    """Trials per block, stacked by outcome."""
    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=110)
    bottom = np.zeros(len(summary.blocks))
    for outcome, colour in OUTCOME_COLOURS.items():
        ax.bar(summary.blocks, summary.counts[outcome], bottom=bottom, color=colour, label=outcome.label,
               width=0.8)
        bottom = bottom + summary.counts[outcome]
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("block")
    ax.set_ylabel("trials")
    ax.set_title(f"{title}trial outcomes per block ({summary.total_trials} trials, "
                 f"{summary.breaks_per_trial:.2f} breaks per trial)", fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def acquire_figure(summary: BehaviorSummary, title: str = "") -> Figure:
    """Histogram of the time to acquire fixation, with the median and the interquartile range."""
    fig, ax = plt.subplots(figsize=(6.5, 3.4), dpi=110)
    q25, median, q75 = summary.acquire_quartiles_ms
    ax.hist(summary.acquire_ms, bins=max(5, min(40, len(summary.acquire_ms) // 2)), color="#8aa",
            edgecolor="white")
    ax.axvspan(q25, q75, color="#c22", alpha=0.12, zorder=0, label=f"IQR {q25:.0f}-{q75:.0f} ms")
    ax.axvline(median, color="#c22", linewidth=2, label=f"median {median:.0f} ms")
    ax.set_xlabel("time to acquire fixation (ms, from the fixation point's onset)")
    ax.set_ylabel("trials")
    ax.set_title(f"{title}time to acquire fixation ({len(summary.acquire_ms)} trials that acquired it)",
                 fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def gaze_density_figure(tables: BehaviorTables, title: str = "", bins: int = 200) -> Figure:
    """2-D histogram of the valid gaze samples (log colour scale) with the fixation window drawn.

    The range covers every valid sample and the window, square and centred on
    the screen, so the counts add up to the valid samples.
    """
    gaze, spec = tables.gaze, tables.spec
    valid = gaze["valid"].astype(bool)
    x, y = gaze["x"][valid].astype(np.float64), gaze["y"][valid].astype(np.float64)
    centre, radius = tuple(float(v) for v in spec["fixation_point_deg"]), float(spec["window_deg"])
    reach = max(np.abs(x).max(initial=0), np.abs(y).max(initial=0), max(map(abs, centre)) + radius) * 1.05
    fig, ax = plt.subplots(figsize=(5.6, 5), dpi=110)
    *_, mesh = ax.hist2d(x, y, bins=bins, range=[[-reach, reach], [-reach, reach]], norm=LogNorm(), cmap="magma_r")
    fig.colorbar(mesh, ax=ax, label="samples per bin")
    ax.add_patch(Circle(centre, radius, fill=False, edgecolor="#06c", linewidth=1.5,
                        label=f"fixation window: radius {radius:g}° around {list(centre)}"))
    ax.set_aspect("equal")
    ax.set_xlabel("x (° from the screen centre, right +)")
    ax.set_ylabel("y (° from the screen centre, up +)")
    ax.set_title(f"{title}gaze density: {valid.sum()} valid samples ({(~valid).sum()} invalid: blinks, lost)",
                 fontsize=8)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    return fig


# -- files ----------------------------------------------------------------------------------------------------


@dataclass
class BehaviorReport:
    """One session's behaviour as the report shows it: the summary and the files written."""

    session: str
    summary: BehaviorSummary
    figures: dict[str, Path] = field(default_factory=dict)
    tables: dict[str, Path] = field(default_factory=dict)


def write_behavior(tables: BehaviorTables, out: Path, stem: str, session: str) -> BehaviorReport:
    """Write ``STEM_blocks.csv``, ``STEM_summary.csv`` and the PNG figures into ``out``.

    Figures without data (no trial acquired fixation, no valid gaze sample) are left out.
    """
    summary = summarise_behavior(tables)
    report = BehaviorReport(session, summary)
    report.tables["blocks"] = _write_csv(out / f"{stem}_blocks.csv", _block_rows(summary))
    report.tables["summary"] = _write_csv(out / f"{stem}_summary.csv", [("metric", "value"), *_summary_rows(summary)])
    title = f"{session}: "
    report.figures["outcomes"] = _save(outcome_figure(summary, title), out / f"{stem}_outcomes.png")
    if len(summary.acquire_ms):
        report.figures["acquire"] = _save(acquire_figure(summary, title), out / f"{stem}_acquire.png")
    if tables.gaze["valid"].astype(bool).any():
        report.figures["gaze"] = _save(gaze_density_figure(tables, title), out / f"{stem}_gaze.png")
    return report


#: The per-block table's columns (CSV header).
BLOCK_COLUMNS = ("block", "trials", *(o.name.lower() for o in TrialOutcome), "unfinished", "breaks_per_trial")


def _block_rows(summary: BehaviorSummary) -> list[tuple]:
    rows: list[tuple] = [BLOCK_COLUMNS]
    for i, block in enumerate(summary.blocks):
        rows.append((int(block), int(summary.trials[i]), *(int(summary.counts[o][i]) for o in TrialOutcome),
                     int(summary.unfinished[i]), f"{summary.block_breaks_per_trial[i]:.4f}"))
    return rows


def _summary_rows(summary: BehaviorSummary) -> list[tuple[str, object]]:
    q25, median, q75 = summary.acquire_quartiles_ms
    return [("trials", summary.total_trials), ("breaks_per_trial", f"{summary.breaks_per_trial:.4f}"),
            ("acquire_trials", len(summary.acquire_ms)), ("acquire_median_ms", f"{median:.1f}"),
            ("acquire_q25_ms", f"{q25:.1f}"), ("acquire_q75_ms", f"{q75:.1f}"),
            ("reward_pulses_earned", summary.earned_pulses), ("reward_pulses_manual", summary.manual_pulses),
            ("manual_rewards", summary.manual_rewards), ("reward_pulses_total", summary.total_pulses),
            ("reward_ms_per_pulse", f"{summary.reward_ms:g}"), ("reward_ms_total", f"{summary.total_reward_ms:g}"),
            ("not_working_s", f"{summary.not_working_s:.1f}"), ("not_working_pauses", summary.not_working_pauses)]


def _write_csv(path: Path, rows: list[tuple]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)
    return path


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path)
    plt.close(fig)
    return path
