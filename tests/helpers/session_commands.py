"""Every command that reads a session file, called in-process, and the check that it failed cleanly."""
from __future__ import annotations

from pathlib import Path

from rig.cli import main


def reading_commands(session: Path, scratch: Path) -> dict[str, list[str]]:
    """argv of each command that reads ``session``; anything they write goes under ``scratch``."""
    return {
        "replay": ["replay", str(session)],
        "report": ["report", str(session), "--out", str(scratch / "report"), "--no-nearest"],
        "analyze": ["analyze", "trajectory", str(session)],
        "export-nwb": ["export-nwb", str(session), str(scratch / "out.nwb")],
        "run --resume": ["run", "--resume", str(session), "--quiet"],
        "salvage": ["salvage", str(session), str(scratch / "salvaged.h5")],
    }


def run_command(argv: list[str], capsys) -> tuple[int, str]:
    """Exit status and stderr of ``rig argv``, stdout appended when the command succeeded."""
    capsys.readouterr()
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.err + (captured.out if code == 0 else "")
