"""Groups of shown images compared: a screening of images taken from sessions (e.g. protocols/twin-check.toml).

The unit of analysis is the image: each image's response is its mean over its
valid showings, and a group is the set of its images' responses. Per group:
the mean and a 95% confidence interval (Student's t over images); per pair of
groups: the difference of means and Welch's two-sided t-test (unequal
variances, images as samples). With few images per group the test is weak,
and a group of one image has no interval: both are reported as undefined
rather than guessed.
"""
from __future__ import annotations

import csv
import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

from rig.analysis.sources import natural_scores
from rig.session import RecordedSession

#: Confidence level of the intervals.
LEVEL = 0.95


@dataclass(frozen=True)
class GroupStats:
    """One group's images' responses: count, mean, 95% CI of the mean (NaN with one image)."""

    group: str
    responses: np.ndarray

    @property
    def count(self) -> int:
        return int(self.responses.size)

    @property
    def mean(self) -> float:
        return float(self.responses.mean())

    @property
    def ci(self) -> tuple[float, float]:
        """Student's t interval of the mean over images."""
        if self.count < 2:
            return float("nan"), float("nan")
        half = stats.t.ppf(0.5 + LEVEL / 2, self.count - 1) * self.responses.std(ddof=1) / np.sqrt(self.count)
        return self.mean - half, self.mean + half


@dataclass(frozen=True)
class PairTest:
    """Welch's t-test of group ``a`` against group ``b`` (NaN when either has fewer than two images)."""

    a: str
    b: str
    difference: float
    t: float
    p: float


@dataclass(frozen=True)
class GroupComparison:
    """Every group of one channel of a screening session, and every pair of them tested."""

    session: str
    channel: str
    groups: list[GroupStats]
    tests: list[PairTest]


def has_groups(session: RecordedSession) -> bool:
    """True for a screening whose images were taken from sessions (ids ``GROUP/NAME``)."""
    screening = session.provenance.get("screening")
    return isinstance(screening, dict) and "taken" in screening


def compare_groups(session: RecordedSession, channel: int | str = 0) -> GroupComparison:
    """Group the session's images by the group part of their id and compare them on ``channel``."""
    from rig.loop.session_images import group_of

    if not has_groups(session):
        raise ValueError(f"{session.path}: not a screening of images taken from sessions "
                         f"([screening] source = \"sessions\"); it has no groups to compare")
    ids, means = natural_scores(session, channel)
    names = session.blocks[0].channel_names
    by_group: dict[str, list[float]] = {}
    for image_id, value in zip(ids, means):
        by_group.setdefault(group_of(image_id), []).append(float(value))
    # In the order the protocol took them, not alphabetical: the protocol's order is the reader's.
    order = list(dict.fromkeys(origin["group"] for origin in session.provenance["screening"]["taken"]))
    groups = [GroupStats(g, np.array(by_group[g])) for g in order if g in by_group]
    tests = [_welch(a, b) for a, b in itertools.combinations(groups, 2)]
    label = channel if isinstance(channel, str) else names[channel]
    return GroupComparison(str(session.path), label, groups, tests)


def _welch(a: GroupStats, b: GroupStats) -> PairTest:
    if a.count < 2 or b.count < 2:
        return PairTest(a.group, b.group, a.mean - b.mean, float("nan"), float("nan"))
    result = stats.ttest_ind(a.responses, b.responses, equal_var=False)
    return PairTest(a.group, b.group, a.mean - b.mean, float(result.statistic), float(result.pvalue))


def write_group_csv(comparison: GroupComparison, path: Path) -> Path:
    """One row per group (count, mean, CI) then one per pair (difference, Welch t, p)."""
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["channel", "group", "images", "mean", "ci_low", "ci_high"])
        for g in comparison.groups:
            writer.writerow([comparison.channel, g.group, g.count, g.mean, *g.ci])
        writer.writerow([])
        writer.writerow(["channel", "group_a", "group_b", "mean_difference", "welch_t", "p"])
        for t in comparison.tests:
            writer.writerow([comparison.channel, t.a, t.b, t.difference, t.t, t.p])
    return path


def group_figure(comparison: GroupComparison, path: Path) -> Path:
    """Each image's mean response by group (dots), each group's mean with its 95% CI (bar)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(comparison.groups), 3.8), dpi=110)
    rng = np.random.default_rng(0)  # jitter only
    for x, g in enumerate(comparison.groups):
        ax.scatter(x + rng.uniform(-0.12, 0.12, g.count), g.responses, s=14, alpha=0.6)
        low, high = g.ci
        if np.isfinite(low):
            ax.errorbar(x + 0.25, g.mean, yerr=[[g.mean - low], [high - g.mean]], fmt="o", color="black",
                        capsize=4)
        else:
            ax.plot(x + 0.25, g.mean, "o", color="black")
    ax.set_xticks(range(len(comparison.groups)), [f"{g.group}\n({g.count} images)" for g in comparison.groups],
                  fontsize=8)
    ax.set_ylabel("response (mean over showings)")
    ax.set_title(f"{comparison.channel}: groups compared (mean, {LEVEL:.0%} CI)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


@dataclass(frozen=True)
class GroupReport:
    """The group comparisons of one session (one per channel) and the files written for them."""

    session: str
    comparisons: list[GroupComparison]
    figures: list[Path]
    tables: list[Path]


def write_groups(session: RecordedSession, out: Path, stem: str) -> GroupReport:
    """Compare the groups on every channel: a CSV table and a figure per channel under ``out``."""
    comparisons, figures, tables = [], [], []
    for channel, _ in enumerate(session.blocks[0].channel_names):
        comparison = compare_groups(session, channel)
        comparisons.append(comparison)
        figures.append(group_figure(comparison, out / f"{stem}_c{channel}_groups.png"))
        tables.append(write_group_csv(comparison, out / f"{stem}_c{channel}_groups.csv"))
    return GroupReport(session.path.name, comparisons, figures, tables)


def groups_html(report: GroupReport, img, num) -> list[str]:
    """The report's section for one session's groups; ``img``/``num`` are the report's figure and number
    formatters."""
    import html

    parts = [f"<h2>Groups compared: {html.escape(report.session)}</h2>",
             "<p class='note'>Each image's response is its mean over valid showings; a group's mean comes with "
             f"a {LEVEL:.0%} confidence interval (Student's t over its images), and each pair of groups with "
             "Welch's two-sided t-test over images. Undefined: a group of one image.</p>"]
    for comparison, figure, table in zip(report.comparisons, report.figures, report.tables):
        parts.append(f"<h3>{html.escape(comparison.channel)}</h3><table><tr><th>group</th><th>images</th>"
                     f"<th>mean</th><th>{LEVEL:.0%} CI</th></tr>")
        parts += [f"<tr><td>{html.escape(g.group)}</td><td>{g.count}</td><td>{num(g.mean)}</td>"
                  f"<td>{num(g.ci[0])} &ndash; {num(g.ci[1])}</td></tr>" for g in comparison.groups]
        parts.append("</table><table><tr><th>group</th><th>vs group</th><th>difference of means</th>"
                     "<th>Welch t</th><th>p</th></tr>")
        parts += [f"<tr><td>{html.escape(t.a)}</td><td>{html.escape(t.b)}</td><td>{num(t.difference)}</td>"
                  f"<td>{num(t.t, '.2f')}</td><td>{num(t.p, '.2g')}</td></tr>" for t in comparison.tests]
        parts.append(f"</table><p class='note'>As CSV: <a href=\"{table.name}\">{table.name}</a></p>")
        parts.append(img(figure, f"responses by group, {comparison.channel}"))
    return parts
