"""``rig export-nwb SESSION.h5 OUT.nwb [--images] [--overwrite]``: write a session as an NWB file.

Every showing of every stimulus (times, validity, scores per channel), the
latent codes, the protocol and provenance, and, for sessions recorded from a
stream, every spike decoded from the stored raw frames go into one NWB file
(layout: ``rig.export.nwb.NWB_LAYOUT``). ``--images`` also renders each
stimulus with the protocol's generator (seconds per image for DeePSiM on a
CPU). The session file is only read; an existing OUT is replaced only with
``--overwrite``. Needs the ``nwb`` extra: ``pip install 'rig-controller[nwb]'``.
Exit status 2 for a file that cannot be read as a session, an OUT in the way,
or pynwb missing.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rig.commands._options import add_trust_generator

HELP = "export a session file to NWB (Neurodata Without Borders): presentations, codes, spikes, scores"

#: Exit status for bad input or a missing extra (as rig.cli.EXIT_USAGE).
EXIT_USAGE = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``rig export-nwb``."""
    parser.add_argument("session", type=Path, help="session file (HDF5) written by rig run")
    parser.add_argument("out", type=Path, help="NWB file to write")
    parser.add_argument("--images", action="store_true",
                        help="also render every stimulus with the protocol's generator and store the images "
                             "(seconds per image for DeePSiM on a CPU)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    add_trust_generator(parser)
    who = parser.add_argument_group("subject and lab (not in the session file; archives such as DANDI need them)")
    who.add_argument("--subject-id", help="the animal's identifier (in silico, default: the simulated model)")
    who.add_argument("--species", help="Latin binomial, e.g. 'Macaca mulatta'")
    who.add_argument("--sex", choices=("M", "F", "U", "O"))
    who.add_argument("--age", help="ISO 8601 duration, e.g. P6Y")
    who.add_argument("--experimenter", action="append", default=[], help="'Last, First'; repeat for several")
    who.add_argument("--lab")
    who.add_argument("--institution")


def run(args: argparse.Namespace) -> int:
    """Export and say what was written."""
    from rig.export.nwb import NwbMetadata, NwbUnavailableError, export_nwb

    metadata = NwbMetadata(subject_id=args.subject_id, species=args.species, sex=args.sex, age=args.age,
                           experimenters=tuple(args.experimenter), lab=args.lab, institution=args.institution)
    try:
        summary = export_nwb(args.session, args.out, images=args.images, overwrite=args.overwrite,
                             metadata=metadata, trust_generator=args.trust_generator)
    except NwbUnavailableError as exc:
        print(f"rig export-nwb: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    spikes = (f"{summary.spikes} spikes of {summary.units} units" if summary.units
              else "no spikes (in silico: none were recorded)")
    print(f"rig export-nwb: wrote {summary.out}: {summary.presentations} presentations of {summary.stimuli} "
          f"stimuli, {spikes}, {summary.images} images")
    if summary.trials:
        print(f"rig export-nwb: behaviour: {summary.trials} trials, {summary.gaze_samples} gaze samples, "
              f"{summary.behavior_events} events")
    if summary.spikes_without_display_time:
        print(f"rig export-nwb: {summary.spikes_without_display_time} spikes have no display-clock time (no "
              f"onset-TTL pairs on their recording clock); they are kept as samples in units.spike_samples")
    for warning in summary.warnings:
        print(f"rig export-nwb: note: {warning}")
    return 0
