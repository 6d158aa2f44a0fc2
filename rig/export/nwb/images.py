"""Stimulus images (``--images``): every stimulus rendered by the protocol's generator or loaded.

Also an IndexSeries of which image each onset showed.
"""
from __future__ import annotations

import numpy as np

from protocols.spec import ProtocolSpec
from rig.export.nwb.tables import Columns, Times
from rig.session import RecordedSession, SessionFileError


def _generator_to_render(session: RecordedSession, trust_generator: str | None) -> ProtocolSpec:
    """The protocol as it ran whose generator renders ``--images``, once it is known to run no untrusted code.

    Its ``[generator]`` comes from the session's run record, weight paths already resolved against the protocol file.
    """
    from rig.loop.rebuild import rebuild

    rebuilt = rebuild(session)
    if rebuilt.spec.kind != "evolution":
        raise SessionFileError(f"{session.path}: --images needs an evolution session (a generator renders the "
                               f"stimuli); this is a {rebuilt.spec.kind} session")
    rebuilt.require_trusted(trust_generator)
    return rebuilt.spec


def add_images(nwb, session: RecordedSession, spec: ProtocolSpec, stimuli: Columns, shown: Columns,
               times: Times) -> int:
    """Images of every stimulus (stimulus templates) and an IndexSeries of which one each onset showed."""
    from pynwb.base import ImageReferences, Images
    from pynwb.image import IndexSeries, RGBImage

    pixels = _render_images(session, spec, stimuli)
    frames = [RGBImage(name=f"stimulus_{i:06d}", data=pixels[i], description=stimuli.values["stimulus_id"][i])
              for i in range(len(pixels))]
    library = Images(name="stimulus_images", images=frames, order_of_images=ImageReferences(name="order_of_images", data=frames),
                     description="one image per row of stimulus/presentation/stimuli, in row order: generated "
                                 "stimuli rendered from their codes, reference images as loaded")
    nwb.add_stimulus_template(library)
    onsets = np.asarray(shown.values["start_time"], dtype=np.float64)
    index = np.asarray(shown.values["stimulus"], dtype=np.int64)
    keep = np.isfinite(onsets)
    order = np.argsort(onsets[keep], kind="stable")
    nwb.add_stimulus(IndexSeries(name="stimulus_shown", data=index[keep][order].astype(np.uint32),
                                 indexed_images=library, unit="N/A", timestamps=onsets[keep][order],
                                 description=f"index into stimulus_images of each presentation, at its onset "
                                             f"({times.reference})"))
    return len(frames)


def _render_images(session: RecordedSession, spec: ProtocolSpec, stimuli: Columns,
                   batch: int = 32) -> np.ndarray:
    """(rows, H, W, 3) uint8: generated stimuli rendered from their codes, reference images loaded."""
    import torch

    from protocols.generators import build_generator
    from rig.loop.assemble import load_references

    options = dict(spec.generator)
    if isinstance(options.get("weights"), str):  # relative to the protocol file, as rig run resolved it
        options["weights"] = str((spec.path.parent / options["weights"]).expanduser())
    try:
        generator = build_generator(**options).eval()
    except (ValueError, TypeError, OSError) as exc:
        raise SessionFileError(f"{session.path}: cannot rebuild the [generator] to render --images: {exc}") from None
    references, reference_ids = load_references(spec, generator.image_size, torch.device("cpu"))
    by_id = dict(zip(reference_ids, references))
    size = generator.image_size
    out = np.zeros((len(stimuli), size, size, 3), dtype=np.uint8)
    generated = [i for i, t in enumerate(stimuli.values["thread"]) if t >= 0]
    codes = np.asarray([stimuli.values["code"][i] for i in generated], dtype=np.float32).reshape(len(generated), -1)

    def to_uint8(images: torch.Tensor) -> np.ndarray:
        return (images.clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype(np.uint8)

    with torch.inference_mode():
        for start in range(0, len(generated), batch):
            chunk = generator(torch.from_numpy(codes[start:start + batch]))
            out[generated[start:start + batch]] = to_uint8(chunk)
    for i, (t, ref) in enumerate(zip(stimuli.values["thread"], stimuli.values["reference_id"])):
        if t < 0:
            if ref not in by_id:
                raise SessionFileError(f"{session.path}: reference image {ref!r} is not among the protocol's "
                                       f"references ({len(by_id)} loaded); cannot render --images")
            out[i] = to_uint8(by_id[ref][None])[0]
    return out
