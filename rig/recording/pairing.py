"""Pairing a showing's onsets with TTL edges so that a shifted pairing cannot be accepted.

Stimuli come at nearly regular intervals, so a TTL train shifted by one
stimulus fits the onset train almost as well as the right one: pairing each
onset with its nearest TTL, or voting on single offsets, accepts such a shift
whenever the first guess of the clock offset is off by an interval. Here the
whole sequence is matched at once:

1. Every physically possible offset between the two clocks is a hypothesis:
   one per (onset, TTL edge) pair, ``offset = edge - rate * onset``. When the
   caller knows a lower bound of the offset (a TTL cannot be acquired before
   its onset, and a sample cannot arrive before it was acquired; see
   :class:`~rig.recording.scorer.StreamScorer`), hypotheses below it are
   impossible and dropped, and so are those more than
   :data:`MAX_LATENCY_S` above it.
2. Each hypothesis pairs onsets with edges within ``tolerance`` samples, one
   to one; hypotheses within ``tolerance`` of each other are one hypothesis,
   refined to the median of its pairs.
3. The best hypothesis is accepted only if it pairs strictly more onsets than
   any other, it pairs at least half of them (one of one), and it lies in the
   accepted range (the pairing window). A tie, e.g. a train shifted by a whole
   stimulus, or the rising and falling edges of a pulse when ``ttl_edges`` is
   "both", is refused and explained; so is a best fit outside the window, with
   the latency it implies and the ``pairing_window_ms`` that would accept it.

A refused pairing marks the showing's stimuli invalid; the controller shows
them again. A wrong pairing is never scored.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

#: Hypotheses implying a longer display-plus-pipeline latency than this are not considered at all.
MAX_LATENCY_S = 2.0
#: Without a lower bound (files written before arrival times bounded the offset), anchor on this many onsets.
UNBOUNDED_ANCHORS = 3


def edge_matches(state: int, edges: str) -> bool:
    """Whether a TTL changing to ``state`` is an onset edge under ``edges``."""
    return edges == "both" or (state == 1) == (edges == "rising")


@dataclass
class Pairing:
    """A showing's pairing: per onset the index of its edge (or -1), and the evidence."""

    ttl_index: np.ndarray
    offset: float | None = None
    matches: int = 0
    #: "" when accepted; otherwise why not, in words for the operator.
    refused: str = ""
    #: Latency the accepted (or best) offset implies above the lower bound, ms; None without a bound.
    latency_ms: float | None = None
    #: Largest distance of a pair from the fitted offset, ms.
    residual_ms: float | None = None
    #: Per onset: another unused edge lies within the tolerance of it too.
    crowded: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    #: The strongest other hypotheses: {"latency_ms" or "offset", "matches"}.
    competitors: list[dict] = field(default_factory=list)

    @property
    def accepted(self) -> bool:
        return not self.refused and self.offset is not None


def pair_sequence(onsets_s: np.ndarray, edges: np.ndarray, rate: float, tolerance: float,
                  lower_bound: float | None = None, window_samples: float | None = None) -> Pairing:
    """Pair onsets (seconds, one clock) with edges (samples, sorted) as a whole sequence; see the module docstring.

    ``lower_bound`` is the smallest physically possible offset (samples);
    ``window_samples`` how far above it an accepted offset may lie (the
    pairing window). Without a lower bound every offset is possible.
    """
    onsets_s = np.asarray(onsets_s, dtype=np.float64)
    edges = np.sort(np.asarray(edges, dtype=np.float64))
    n = len(onsets_s)
    result = Pairing(np.full(n, -1, dtype=np.int64), crowded=np.zeros(n, dtype=bool))
    if n == 0:
        return result
    if edges.size == 0:
        result.refused = "no TTL edge arrived for these onsets"
        return result
    base = rate * onsets_s
    offsets = _candidate_offsets(base, edges, rate, tolerance, lower_bound)
    if offsets.size == 0:
        result.refused = "no TTL edge lies after these onsets"
        return result
    hypotheses = _hypotheses(offsets, base, edges, tolerance)
    best_offset, best_count = hypotheses[0]
    result.offset, result.matches = best_offset, best_count
    result.latency_ms = None if lower_bound is None else (best_offset - lower_bound) / rate * 1000.0
    result.competitors = [_describe(o, c, lower_bound, rate) for o, c in hypotheses[1:4]]
    needed = 1 if n == 1 else max(2, math.ceil(n / 2))
    rivals = [(o, c) for o, c in hypotheses[1:] if c >= best_count]
    if rivals:
        result.refused = (f"the onsets fit TTL edges {_where(best_offset, lower_bound, rate)} and "
                          f"{_where(rivals[0][0], lower_bound, rate)} equally ({best_count}/{n} paired each), so "
                          f"which edge belongs to which stimulus cannot be told; check [recording] ttl_edges "
                          f"('both' also pairs a pulse's falling edges) and ttl_line")
    elif best_count < needed:
        result.refused = (f"only {best_count} of {n} onsets found a TTL edge at one offset "
                          f"({_where(best_offset, lower_bound, rate)}); at least {needed} must")
    elif window_samples is not None and lower_bound is not None and best_offset > lower_bound + window_samples + tolerance:
        latency = (best_offset - lower_bound) / rate * 1000.0
        window_ms = window_samples / rate * 1000.0
        result.refused = (f"the onsets fit TTL edges {latency:.0f} ms after them ({best_count}/{n} paired), beyond "
                          f"pairing_window_ms = {window_ms:g}; if the display and acquisition really lag that much, "
                          f"set [recording] pairing_window_ms = {_suggest(latency)}")
    index, crowded = _pair_one_to_one(best_offset + base, edges, tolerance)
    if result.refused:
        return result
    result.ttl_index, result.crowded = index, crowded
    paired = index >= 0
    result.residual_ms = float(np.max(np.abs(edges[index[paired]] - best_offset - base[paired]))) / rate * 1000.0
    return result


def _candidate_offsets(base: np.ndarray, edges: np.ndarray, rate: float, tolerance: float,
                       lower_bound: float | None) -> np.ndarray:
    """One offset per (onset, edge) pair that is physically possible, thinned to one per tolerance bin."""
    anchors = base if lower_bound is not None else base[:UNBOUNDED_ANCHORS]
    offsets = (edges[None, :] - anchors[:, None]).ravel()
    if lower_bound is not None:
        offsets = offsets[(offsets >= lower_bound - tolerance) & (offsets <= lower_bound + rate * MAX_LATENCY_S)]
    if offsets.size == 0:
        return offsets
    _, first = np.unique(np.floor(offsets / max(tolerance, 1.0)), return_index=True)
    return offsets[first]


def _hypotheses(offsets: np.ndarray, base: np.ndarray, edges: np.ndarray, tolerance: float) -> list[tuple[float, int]]:
    """Distinct offsets with the onsets each pairs, best first (ties: smaller total distance first)."""
    counts = _match_counts(offsets, base, edges, tolerance)
    order = np.argsort(offsets)
    groups: list[list[int]] = []
    for k in order:
        if groups and offsets[k] - offsets[groups[-1][-1]] <= tolerance:
            groups[-1].append(int(k))
        else:
            groups.append([int(k)])
    top = max(counts)
    refined: list[tuple[int, float, float]] = []
    for group in groups:
        k = max(group, key=lambda i: counts[i])
        if counts[k] < (top + 1) // 2 - 1:
            continue  # cannot rival the best even after refining
        offset = _refine(offsets[k], base, edges, tolerance)
        index, _ = _pair_one_to_one(offset + base, edges, tolerance)
        paired = index >= 0
        distance = float(np.abs(edges[index[paired]] - offset - base[paired]).sum())
        refined.append((int(paired.sum()), -distance, offset))
    refined.sort(reverse=True)
    merged: list[tuple[float, int]] = []
    for count, _, offset in refined:
        if all(abs(offset - o) > tolerance for o, _ in merged):
            merged.append((offset, count))
    return merged


def _match_counts(offsets: np.ndarray, base: np.ndarray, edges: np.ndarray, tolerance: float) -> np.ndarray:
    """For each offset, how many onsets have an edge within ``tolerance`` (not yet one to one)."""
    counts = np.zeros(len(offsets), dtype=np.int64)
    chunk = max(1, 2_000_000 // max(len(base), 1))
    for start in range(0, len(offsets), chunk):
        predicted = offsets[start:start + chunk, None] + base[None, :]
        distance = _nearest_distance(predicted, edges)
        counts[start:start + chunk] = (distance <= tolerance).sum(axis=1)
    return counts


def _nearest_distance(predicted: np.ndarray, edges: np.ndarray) -> np.ndarray:
    idx = np.searchsorted(edges, predicted)
    below = edges[np.clip(idx - 1, 0, edges.size - 1)]
    above = edges[np.clip(idx, 0, edges.size - 1)]
    return np.minimum(np.abs(predicted - below), np.abs(predicted - above))


def _refine(offset: float, base: np.ndarray, edges: np.ndarray, tolerance: float) -> float:
    """The median offset of the pairs ``offset`` makes (so one jittered anchor does not decide)."""
    index, _ = _pair_one_to_one(offset + base, edges, tolerance)
    paired = index >= 0
    return float(np.median(edges[index[paired]] - base[paired])) if paired.any() else float(offset)


def _pair_one_to_one(predicted: np.ndarray, edges: np.ndarray, tolerance: float) -> tuple[np.ndarray, np.ndarray]:
    """Each prediction's closest unused edge within ``tolerance`` (-1 if none), closest pairs first; and
    whether another edge lay within ``tolerance`` of it too."""
    n = len(predicted)
    index = np.full(n, -1, dtype=np.int64)
    crowded = np.zeros(n, dtype=bool)
    lo = np.searchsorted(edges, predicted - tolerance, "left")
    hi = np.searchsorted(edges, predicted + tolerance, "right")
    options = [(abs(edges[j] - predicted[i]), i, j) for i in range(n) for j in range(lo[i], hi[i])]
    used: set[int] = set()
    for _, i, j in sorted(options):
        if index[i] < 0 and j not in used:
            index[i] = j
            used.add(j)
    crowded[:] = (hi - lo) > 1
    return index, crowded


def _where(offset: float, lower_bound: float | None, rate: float) -> str:
    if lower_bound is None:
        return f"at offset {offset:.0f} samples"
    return f"{(offset - lower_bound) / rate * 1000.0:.0f} ms after them"


def _describe(offset: float, count: int, lower_bound: float | None, rate: float) -> dict:
    if lower_bound is None:
        return {"offset": float(offset), "matches": int(count)}
    return {"latency_ms": round((offset - lower_bound) / rate * 1000.0, 1), "matches": int(count)}


def _suggest(latency_ms: float) -> int:
    """A pairing window with room above the measured latency, rounded up to 50 ms."""
    return int(math.ceil((latency_ms * 1.25 + 20.0) / 50.0) * 50)
