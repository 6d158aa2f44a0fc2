"""What a finished session leaves beside its file: the best images and a score trajectory plot."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no screen needed; rig runs on headless machines
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from protocols.generators.base import Generator  # noqa: E402
from rig.session import RecordedSession  # noqa: E402


def thread_trajectory(session: RecordedSession, thread: int, channel: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and max score of a thread per generation."""
    scores = [b.thread_scores(thread, channel) for b in session.blocks]
    return np.array([s.mean() for s in scores]), np.array([s.max() for s in scores])


def best_code(session: RecordedSession, thread: int, channel: int) -> tuple[np.ndarray, float, int]:
    """The highest-scoring code of a thread over the whole session, its score and block."""
    best = (None, -np.inf, -1)
    for b in session.blocks:
        scores = b.thread_scores(thread, channel)
        i = int(np.argmax(scores))
        if scores[i] > best[1]:
            best = (b.codes[thread][i], float(scores[i]), b.index)
    if best[0] is None:
        raise ValueError(f"{session.path}: no blocks recorded for thread {thread}")
    return best


def save_png(image: torch.Tensor, path: Path) -> None:
    """Write one (3, H, W) image in [0, 1] as an 8-bit PNG."""
    array = (image.clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
    Image.fromarray(array).save(path)


def write_session_outputs(session: RecordedSession, generator: Generator, stem: Path) -> list[Path]:
    """Best image per thread (``STEM_best_tN.png``) and the trajectory plot (``STEM_trajectory.png``)."""
    channels = session.provenance["thread_channels"]
    written = []
    for thread, channel in enumerate(channels):
        code, _, _ = best_code(session, thread, channel)
        with torch.inference_mode():
            image = generator(torch.from_numpy(code[None]))[0]  # the generator moves codes to its device
        path = stem.with_name(f"{stem.name}_best_t{thread}.png")
        save_png(image, path)
        written.append(path)
    written.append(plot_trajectory(session, stem.with_name(f"{stem.name}_trajectory.png")))
    return written


def plot_trajectory(session: RecordedSession, path: Path) -> Path:
    """Mean and max score per generation for every thread, with the reference images' mean."""
    channels = session.provenance["thread_channels"]
    names = session.blocks[0].channel_names
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    generations = np.array([b.index for b in session.blocks])
    for thread, channel in enumerate(channels):
        mean, best = thread_trajectory(session, thread, channel)
        line, = ax.plot(generations, mean, label=f"thread {thread} mean")
        ax.plot(generations, best, linestyle="--", color=line.get_color(), label=f"thread {thread} max")
    for channel in sorted(set(channels)):
        # A block with no scored reference (none shown, or all invalid) has no point, not a warning.
        refs = np.array([scores[np.isfinite(scores)].mean() if np.isfinite(scores).any() else np.nan
                         for scores in (np.asarray(b.reference_scores(channel), dtype=float) for b in session.blocks)])
        if np.isfinite(refs).any():
            ax.plot(generations, refs, color="grey", label=f"reference images, {names[channel]}")
    ax.set_xlabel("generation")
    ax.set_ylabel("response")
    ax.set_title(f"{session.attrs.get('protocol_path', '')}: {', '.join(names)}", fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
