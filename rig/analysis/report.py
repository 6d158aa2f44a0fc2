"""``rig report``: a self-contained HTML report of evolution sessions, with PNG figures.

For each evolution (thread) of each session: the score trajectory, a montage
of the best image per generation, the final prototype, the natural-image score
distribution with the prototype marked, and the nearest natural images in a
separate network's feature space; then convergence compared across all of
them. Natural-image scores come from a screening session recorded on the same
channel when one is given, else from the reference images shown during the
evolution. Figures are written as PNG files and also embedded in the HTML, so
``index.html`` alone can be mailed or archived.

A session with behaviour (a ``[behavior]`` table) also gets a Behaviour
section (:mod:`rig.analysis.behavior`): trial outcomes per block, breaks per
trial, the time to acquire fixation, reward, time not working and a gaze
density plot, with the numbers as CSV files beside the figures.
"""
from __future__ import annotations

import base64
import html
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from rig.analysis import figures
from rig.analysis.behavior import BehaviorReport, write_behavior
from rig.analysis.convergence import (DEFAULT_MIN_GAIN, Convergence, Gain, check_min_gain, evolution_gain,
                                      judged_convergence, natural_spread)
from rig.analysis.groups import GroupReport, groups_html, has_groups, write_groups
from rig.analysis.images import best_codes_per_generation, load_natural_images, render, session_generator
from rig.analysis.nearest import FeatureExtractor, cosine_nearest
from rig.analysis.prototype import PrototypeComparison, prototype_vs_natural
from rig.predictivity.outputs import report_section
from rig.analysis.sources import Thread, natural_scores, session_threads, session_trajectory
from rig.analysis.outputs import best_code, plot_trajectory
from rig.behavior.outcomes import TrialOutcome
from rig.behavior.tables import behavior_tables
from rig.session import RecordedSession, read_session


@dataclass
class EvolutionSummary:
    """What the report says about one thread of one session."""

    session: str
    thread: Thread
    generations: int
    best_score: float
    best_generation: int
    convergence: Convergence | None
    comparison: PrototypeComparison | None
    gain: Gain | None  # None: not judged (fewer than two natural images to measure their spread)
    natural_source: str
    figures: dict[str, Path] = field(default_factory=dict)
    nearest: list[tuple[str, float]] = field(default_factory=list)


def _natural_for(thread: Thread, session: RecordedSession, screenings: Sequence[RecordedSession]):
    """(scores, image source, base dir, label): a screening on the same channel, else the session's references."""
    for screening in screenings:
        if thread.name in screening.blocks[0].channel_names:
            _, scores = natural_scores(screening, thread.name)
            folder = screening.provenance["screening"]["folder"]
            return scores, folder, None, f"screening {screening.path.name}"
    _, scores = natural_scores(session, thread.channel)
    refs = session.provenance.get("references", {}).get("source", "foolbox-imagenet")
    base = Path(str(session.attrs.get("protocol_path", "."))).parent
    return scores, refs, base, "reference images shown during the evolution"


def build_report(sessions: Sequence[str | Path], out: str | Path, natural: Sequence[str | Path] = (),
                 network: str = "auto", k: int = 5, nearest: bool = True,
                 trust_generator: str | None = None, compare: str | Path | None = None,
                 min_gain: float = DEFAULT_MIN_GAIN) -> Path:
    """Write ``out/index.html`` and its PNG figures for evolution ``sessions``; return the HTML path.

    ``natural`` are screening session files; ``network`` picks the feature
    network for nearest natural images (``auto``: ResNet-101 if present, else
    EfficientNet-Lite0); ``nearest=False`` skips that analysis. A session's ``kind = "module"``
    generator runs only when ``trust_generator`` names its factory. An evolution counts as evolved when its
    final mean beats the first by more than ``min_gain`` SDs of the natural images' responses (convergence.py).
    """
    min_gain = check_min_gain(min_gain)
    if not sessions:
        raise ValueError("rig report: give at least one evolution session file")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # ``compare``: a ``rig compare --out DIR`` folder, shown as a section (rig/predictivity/outputs.py).
    compare_section = report_section(compare, _img) if compare is not None else []
    recorded = [read_session(p) for p in sessions]
    screenings = [read_session(p) for p in natural]
    for s in screenings:
        if "screening" not in s.provenance:
            raise ValueError(f"{s.path}: --natural needs screening sessions ([protocol] kind = \"screening\")")
    # Screenings of taken images have no prototypes to find neighbours for: no feature network for them alone.
    extractor = FeatureExtractor(network) if nearest and not all(map(has_groups, recorded)) else None
    summaries: list[EvolutionSummary] = []
    behaviour: list[BehaviorReport] = []
    groups: list[GroupReport] = []
    curves: dict[str, Convergence] = {}
    for number, session in enumerate(recorded):
        if has_groups(session):  # a screening of images taken from sessions: its groups compared (groups.py)
            groups.append(write_groups(session, out, f"s{number}"))
            continue
        threads = session_threads(session)
        if not threads:
            raise ValueError(f"{session.path}: not an evolution session; pass screening sessions with --natural")
        generator = session_generator(session, trust_generator=trust_generator)
        stem = f"s{number}"
        plot_trajectory(session, out / f"{stem}_trajectory.png")
        for t in threads:
            summaries.append(_summarise(session, t, generator, screenings, extractor, k, out, f"{stem}_t{t.thread}",
                                        min_gain))
            summaries[-1].figures["trajectory"] = out / f"{stem}_trajectory.png"
            if summaries[-1].convergence is not None:  # evolutions that did not evolve are counted apart
                curves[f"{session.path.stem} t{t.thread} {t.name}"] = summaries[-1].convergence
        tables = behavior_tables(session)
        if tables is not None:
            behaviour.append(write_behavior(tables, out, f"{stem}_behavior", session.path.name))
    flat = sum(1 for s in summaries if s.gain is not None and not s.gain.evolved)
    conv_path = figures.convergence_figure(
        curves, out / "convergence.png",
        f"convergence compared across sessions ({len(curves)} evolved; {flat} did not evolve)") if curves else None
    page = out / "index.html"
    page.write_text(_html(summaries, conv_path, recorded, screenings, extractor, behaviour, groups,
                          compare_section, min_gain), encoding="utf-8")
    return page


def _summarise(session: RecordedSession, t: Thread, generator, screenings, extractor, k: int, out: Path,
               stem: str, min_gain: float = DEFAULT_MIN_GAIN) -> EvolutionSummary:
    trajectory = session_trajectory(session, t.thread)
    code, score, generation = best_code(session, t.thread, t.channel)
    scores, image_source, base, natural_label = _natural_for(t, session, screenings)
    # Convergence only for an evolution that gained more than min_gain × the natural images' spread (convergence.py).
    # With fewer than two natural images there is no spread to judge by: neither gain nor convergence is shown.
    gain = (evolution_gain(trajectory.mean, natural_spread(scores), min_gain=min_gain)
            if np.isfinite(scores).sum() >= 2 else None)
    try:
        conv = judged_convergence(trajectory.mean, gain, trajectory.generations) if gain is not None else None
    except ValueError:  # a flat trajectory (e.g. one generation) has no convergence
        conv = None
    comparison = prototype_vs_natural(score, scores)
    summary = EvolutionSummary(str(session.path), t, len(session.blocks), score, generation, conv, comparison,
                               gain, natural_label)
    codes, best_scores = best_codes_per_generation(session, t.thread)
    # At most 40 tiles: long sessions show evenly spaced generations, always including the last.
    keep = np.unique(np.linspace(0, len(codes) - 1, min(40, len(codes))).round().astype(int))
    summary.figures["montage"] = figures.montage(
        render(generator, codes[keep]), [f"gen {session.blocks[i].index}\n{best_scores[i]:.3g}" for i in keep],
        out / f"{stem}_montage.png", title=f"best image per generation: {t.name}")
    prototype = render(generator, code[None])[0]
    summary.figures["prototype"] = figures.image_png(
        prototype, out / f"{stem}_prototype.png", f"prototype, score {score:.4g} (generation {generation})")
    summary.figures["natural"] = figures.natural_distribution(
        scores, comparison, out / f"{stem}_natural.png", title=t.name, source=natural_label)
    if extractor is not None:
        natural_images, ids = load_natural_images(image_source, extractor.cfg.input_size, base)
        found = cosine_nearest(extractor(prototype[None]), extractor(natural_images), min(k, len(ids)))
        summary.nearest = [(ids[i], float(s)) for i, s in zip(found.indices[0], found.similarities[0])]
        summary.figures["nearest"] = figures.nearest_figure(
            prototype, natural_images[found.indices[0]], [n for n, _ in summary.nearest], found.similarities[0],
            out / f"{stem}_nearest.png", extractor.name)
    return summary


def _gain_note(gain: Gain | None) -> str:
    """The section's verdict on whether the evolution gained (or why it was not judged)."""
    if gain is None:
        return ("not judged: whether it evolved is measured against the spread of at least two natural images' "
                "responses (show more reference images, or pass a screening with --natural)")
    return gain.describe()


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'
            f'<figcaption>{html.escape(alt)} (<a href="{path.name}">{path.name}</a>)</figcaption></figure>')


def _num(value: float | int | None, fmt: str = ".3g") -> str:
    if value is None:
        return "never"
    if isinstance(value, float) and np.isnan(value):
        return "undefined"
    return format(value, fmt) if isinstance(value, float) else str(value)


_CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#eef}td:first-child,td:nth-child(2){text-align:left}img{max-width:100%}
figure{display:inline-block;margin:0.5em;vertical-align:top}figcaption{font-size:11px;color:#555}
h2{border-bottom:1px solid #ccc;margin-top:2em}.note{font-size:12px;color:#555}"""


def _html(summaries: list[EvolutionSummary], conv_path: Path | None, sessions, screenings, extractor,
          behaviour: Sequence[BehaviorReport] = (), groups: Sequence[GroupReport] = (),
          extra: Sequence[str] = (), min_gain: float = DEFAULT_MIN_GAIN) -> str:
    rows = []
    for s in summaries:
        c, p = s.convergence, s.comparison
        flat = "not judged" if s.gain is None else "did not evolve" if not s.gain.evolved else "n/a"
        rows.append(
            f"<tr><td>{html.escape(Path(s.session).name)} t{s.thread.thread}</td><td>{html.escape(s.thread.name)}</td>"
            f"<td>{s.generations}</td><td>{_num(s.best_score)}</td>"
            f"<td>{_num(c.reached[0.5]) if c else flat}</td><td>{_num(c.reached[0.8]) if c else flat}</td>"
            f"<td>{_num(p.percent_over_mean, '+.0f')}</td><td>{_num(p.ratio_to_best, '.2f')}</td>"
            f"<td>{_num(p.percentile, '.0f')}</td><td>{p.natural_count}</td>"
            f"<td>{_num(p.z_over_natural, '+.2f')}</td><td>{_num(s.gain.in_scale, '+.2f') if s.gain else 'n/a'}</td></tr>")
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>rig report</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>Evolution report</h1>",
        f"<p class='note'>Made {time.strftime('%Y-%m-%d %H:%M')} from "
        f"{', '.join(html.escape(str(s.path)) for s in sessions)}"
        f"{'; natural images screened in ' + ', '.join(html.escape(str(s.path)) for s in screenings) if screenings else ''}.</p>",
    ]
    parts += _timing_html(sessions)
    if summaries:  # none when only screenings of taken images were given (their groups follow)
        parts += [
            "<h2>Summary</h2><table><tr><th>evolution</th><th>unit</th><th>generations</th><th>best score</th>"
            "<th>first gen &ge; 50%</th><th>first gen &ge; 80%</th><th>% over natural mean</th>"
            "<th>&divide; best natural</th><th>percentile</th><th>natural images</th>"
            "<th>(prototype &minus; natural mean) / natural SD</th><th>gain / natural SD</th></tr>",
            *rows, "</table>",
            "<p class='note'>Convergence: first generation whose min&ndash;max-normalised mean score reaches 50% / 80%, "
            f"given only for evolutions that evolved: the last generation's mean beat the first by more than "
            f"{min_gain:g} SD of the natural images' responses (gain / natural SD; rig report --min-gain); the "
            "others are flagged &ldquo;did not evolve&rdquo;, since min&ndash;max normalisation stretches a "
            "flat trajectory too. "
            "Percent over the natural mean depends on the response scale (undefined when the natural mean is not "
            "positive), and the ratio to the best natural image needs a positive best; the percentile and "
            "(prototype &minus; natural mean) / natural SD are scale-free and defined for any sign.</p>",
        ]
    if conv_path is not None:
        parts += ["<h2>Convergence compared</h2>", _img(conv_path, "normalised mean score per generation")]
    for s in summaries:
        parts.append(f"<h2>{html.escape(Path(s.session).name)}, thread {s.thread.thread}: "
                     f"{html.escape(s.thread.name)}</h2><p class='note'>{html.escape(_gain_note(s.gain))}</p>")
        parts.append(_img(s.figures["trajectory"], "score trajectory: mean and max per generation, reference images"))
        parts.append(_img(s.figures["prototype"], "final prototype"))
        parts.append(_img(s.figures["natural"], f"natural-image scores ({s.natural_source}) with the prototype"))
        parts.append(_img(s.figures["montage"], "best image per generation"))
        if "nearest" in s.figures:
            parts.append(_img(s.figures["nearest"], f"nearest natural images ({extractor.name} features)"))
    for b in behaviour:
        parts += _behavior_html(b)
    for g in groups:
        parts += groups_html(g, _img, _num)
    parts += extra
    parts.append("</body></html>")
    return "\n".join(parts)


def _timing_html(sessions: Sequence[RecordedSession]) -> list[str]:
    """The recording's timing warnings of each session (kept in its provenance at the start of the run)."""
    items = [f"<li>{html.escape(session.path.name)}: {html.escape(str(warning))}</li>"
             for session in sessions
             for warning in session.provenance.get("recording", {}).get("timing_warnings", [])]
    if not items:
        return []
    return ["<h2>Recording timing warnings</h2>",
            "<p class='note'>Stimulus onsets came closer together than the scoring windows allow, so another "
            "stimulus's response may be in these scores (printed when the run started, kept in the session):</p>",
            "<ul class='warnings'>", *items, "</ul>"]


_BEHAVIOR_FIGURES = {"outcomes": "trial outcomes per block", "acquire": "time to acquire fixation",
                     "gaze": "gaze density (valid samples, log colour scale) and the fixation window"}


def _behavior_html(report: BehaviorReport) -> list[str]:
    """The Behaviour section of one session: outcomes per block, fixation, reward, time not working, figures."""
    s = report.summary
    labels = [o.label for o in TrialOutcome]
    rows = [f"<tr><td>{block}</td><td>{s.trials[i]}</td>"
            + "".join(f"<td>{s.counts[o][i]}</td>" for o in TrialOutcome)
            + f"<td>{s.unfinished[i]}</td><td>{s.block_breaks_per_trial[i]:.2f}</td></tr>"
            for i, block in enumerate(s.blocks)]
    rows.append(f"<tr><th>all</th><th>{s.total_trials}</th>"
                + "".join(f"<th>{int(s.counts[o].sum())}</th>" for o in TrialOutcome)
                + f"<th>{int(s.unfinished.sum())}</th><th>{_num(s.breaks_per_trial, '.2f')}</th></tr>")
    q25, median, q75 = s.acquire_quartiles_ms
    facts = [f"{_num(s.breaks_per_trial, '.2f')} breaks per trial ({int(s.counts[TrialOutcome.BROKE_FIXATION].sum())} "
             f"of {s.total_trials} trials broke fixation).",
             f"Time to acquire fixation: median {_num(median, '.0f')} ms, IQR {_num(q25, '.0f')}&ndash;"
             f"{_num(q75, '.0f')} ms ({len(s.acquire_ms)} trials acquired it).",
             f"Reward: {s.total_pulses} pulses, {_num(s.total_reward_ms, '.0f')} ms of juice at {s.reward_ms:g} ms a "
             f"pulse: {s.earned_pulses} earned by trials, {s.manual_pulses} given by the operator in "
             f"{s.manual_rewards} manual rewards."]
    if s.not_working_pauses:
        facts.append(f"Not working: {s.not_working_s:.0f} s in {s.not_working_pauses} pauses (from the last "
                     f"fixation to fixation offered again after each pause).")
    links = ", ".join(f'<a href="{p.name}">{p.name}</a>' for p in report.tables.values())
    return [f"<h2>Behaviour: {html.escape(report.session)}</h2>",
            "<table><tr><th>block</th><th>trials</th>" + "".join(f"<th>{x}</th>" for x in labels)
            + "<th>unfinished</th><th>breaks per trial</th></tr>", *rows, "</table>",
            "<ul>" + "".join(f"<li>{fact}</li>" for fact in facts) + "</ul>",
            f"<p class='note'>Trials of blocks the operator stopped count under their block (unfinished). "
            f"Tables as CSV: {links}.</p>",
            *(_img(path, _BEHAVIOR_FIGURES[key]) for key, path in report.figures.items())]
