"""The screening source "images from sessions": images regenerated from earlier sessions, traced to their origin."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from helpers.protocols import run_tiny_session
from protocols.spec import ProtocolError, parse_protocol
from rig.analysis.sources import natural_scores
from rig.cli import EXIT_USAGE, main
from rig.loop.rebuild import rebuild
from rig.loop.session_images import code_sha256, file_sha256, take_images
from rig.session import SessionFileError, read_session

UNIT = "test_cnn:features.7:unit=5"


def check_protocol(*takes: str, extra: str = "") -> str:
    """A screening of taken images, shown to the unit the evolution followed."""
    tables = "".join(f"\n[[screening.take]]\n{t}\n" for t in takes)
    return f"""
[protocol]
kind = "screening"
seed = 2
[screening]
source = "sessions"
repeats = 2
image_size = 32
{extra}{tables}
[neuron]
units = ["{UNIT}"]
weights = "random"
"""


@pytest.fixture(scope="module")
def evolved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("taken")
    return run_tiny_session(folder, generations=3, seed=4, popsize=6, references=2, units=(UNIT,))


def _spec(evolved, *takes, extra=""):
    path = evolved.parent / "check.toml"
    path.write_text(check_protocol(*takes, extra=extra))
    return parse_protocol(path.read_text(), path)


def test_taken_images_are_the_recorded_ones(evolved, capsys):
    source = read_session(evolved)
    final = source.blocks[-1].thread_scores(0, 0)
    overall = [(s, b.index, i) for b in source.blocks for i, s in enumerate(b.thread_scores(0, 0))]
    path = evolved.parent / "check.toml"
    path.write_text(check_protocol('group = "best"\nsession = "s.h5"\nfinal_best = 2',
                                   'group = "top"\nsession = "s.h5"\ntop = 2',
                                   'group = "picked"\nsession = "s.h5"\nimages = [[0, 5], [2, 0]]',
                                   'group = "natural"\nnatural = "foolbox-imagenet"\ncount = 3'))
    out = evolved.parent / "check.h5"
    assert main(["run", str(path), "--out", str(out), "--quiet"]) == 0
    check = read_session(out)
    taken = check.provenance["screening"]["taken"]
    best = np.argsort(-final)[:2]
    top = sorted(overall, key=lambda t: -t[0])[:2]
    assert check.reference_ids == [f"best/s-t0-g2-i{i}" for i in best] + [
        f"top/s-t0-g{g}-i{i}" for _, g, i in top] + ["picked/s-t0-g0-i5", "picked/s-t0-g2-i0"] + [
        "natural/imagenet_00_243", "natural/imagenet_01_559", "natural/imagenet_02_438"]
    # Each image's origin is recorded: the file, its id and hash, where in it, and the code's hash.
    sha = file_sha256(evolved)
    for origin in taken[:6]:
        assert origin["session_id"] == source.attrs["session_id"] and origin["session_sha256"] == sha
        code = source.blocks[origin["generation"]].codes[0][origin["index"]]
        assert origin["code_sha256"] == code_sha256(code)
    assert [o["natural"] for o in taken[6:]] == ["foolbox-imagenet"] * 3
    # Regenerated through the session's own generator, the same unit answers as it did in the evolution
    # (a noiseless simulated unit, images at the generator's own size).
    ids, means = natural_scores(check, 0)
    shown = dict(zip(ids, means))
    for image_id, origin in zip(check.reference_ids, taken[:6]):
        assert shown[image_id] == pytest.approx(origin["score"], rel=1e-5, abs=1e-6)
        recorded = source.blocks[origin["generation"]].thread_scores(0, 0)[origin["index"]]
        assert origin["score"] == pytest.approx(recorded)


def test_bad_references_name_the_file_and_table(evolved, tmp_path):
    missing = _spec(evolved, 'group = "twin"\nsession = "nowhere/twin.h5"\ntop = 1')
    with pytest.raises(ProtocolError, match=r"#1 \(group 'twin'\): session file .*nowhere/twin.h5 not found"):
        take_images(missing)
    pinned = _spec(evolved, f'group = "e"\nsession = "s.h5"\ntop = 1\nsha256 = "{"0" * 64}"')
    with pytest.raises(ProtocolError, match=r"s.h5 has SHA-256 [0-9a-f]{64}, not the sha256 = '0{64}' pinned"):
        take_images(pinned)
    for take, message in [
        ('group = "e"\nsession = "s.h5"\nthread = 3\ntop = 1', "has no thread 3 \\(it has 1 evolution"),
        ('group = "e"\nsession = "s.h5"\nimages = [[7, 0]]', "has no generation 7 \\(it has 0..2\\)"),
        ('group = "e"\nsession = "s.h5"\nimages = [[1, 6]]', "has 6 images in thread 0; no index 6"),
        ('group = "e"\nsession = "s.h5"\nfinal_best = 7', "asked for 7 images but the final generation"),
    ]:
        with pytest.raises(ProtocolError, match=message):
            take_images(_spec(evolved, take))
    # A file that is not a session is named too.
    (evolved.parent / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(ProtocolError, match="cannot take images from .*junk.h5"):
        take_images(_spec(evolved, 'group = "e"\nsession = "junk.h5"\ntop = 1'))


@pytest.mark.parametrize("text, message", [
    ('group = "e"\nsession = "s.h5"\ntop = 1\nfinal_best = 2', "exactly one of final_best"),
    ('group = "e"\nsession = "s.h5"', "exactly one of final_best"),
    ('group = "e"\nsession = "s.h5"\nnatural = "foolbox-imagenet"\ntop = 1', "exactly one of session"),
    ('group = "a b"\nsession = "s.h5"\ntop = 1', "group: expected a label"),
    ('group = "e"\nsession = "s.h5"\ntop = 1\nthred = 0', "unknown field\\(s\\) \\['thred'\\]"),
    ('group = "e"\nsession = "s.h5"\nimages = [[1]]', "list of \\[generation, index\\] pairs"),
    ('group = "e"\nsession = "s.txt"\ntop = 1', "session: expected a session file"),
    ('group = "e"\nsession = "s.h5"\ntop = 0', "top: expected an integer in 1..10000, got 0"),
])
def test_take_tables_are_checked(text, message, tmp_path):
    with pytest.raises(ProtocolError, match=message):
        parse_protocol(check_protocol(text), tmp_path / "p.toml")


def test_source_and_tables_go_together(tmp_path, capsys):
    with pytest.raises(ProtocolError, match=r"\[screening\] take: .*go with source = \"sessions\""):
        parse_protocol(check_protocol(), tmp_path / "p.toml")   # source = "sessions" without tables
    stray = check_protocol('group = "e"\nsession = "s.h5"\ntop = 1').replace('source = "sessions"',
                                                                              'source = "foolbox-imagenet"')
    with pytest.raises(ProtocolError, match="go with source"):
        parse_protocol(stray, tmp_path / "p.toml")
    (tmp_path / "p.toml").write_text(check_protocol('group = "e"\nsession = "gone.h5"\ntop = 1'))
    assert main(["run", str(tmp_path / "p.toml"), "--out", str(tmp_path / "c.h5"), "--quiet"]) == EXIT_USAGE
    assert "gone.h5 not found" in capsys.readouterr().err


def test_a_rebuilt_screening_takes_the_recorded_images_or_refuses(evolved, tmp_path):
    """A resume rebuilds a screening's parts (Rebuilt.assemble): with its source file unchanged the same images
    come back under the same ids; a source file replaced by another session (another seed) is refused."""
    shutil.copy(evolved, tmp_path / "s.h5")
    (tmp_path / "check.toml").write_text(check_protocol('group = "best"\nsession = "s.h5"\nfinal_best = 2'))
    out = tmp_path / "check.h5"
    assert main(["run", str(tmp_path / "check.toml"), "--out", str(out), "--quiet"]) == 0
    check = read_session(out)
    parts = rebuild(check).assemble("cpu")
    assert parts.protocol.image_ids == check.reference_ids
    assert parts.provenance["screening"]["taken"] == check.provenance["screening"]["taken"]

    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(run_tiny_session(other, generations=2, seed=5, popsize=4, units=(UNIT,)),
                tmp_path / "s.h5")
    first = check.reference_ids[0]
    with pytest.raises(SessionFileError, match=rf"check.h5: the images taken now are not the recorded ones: image #1 "
                                               rf"'{first}' \(from {tmp_path / 's.h5'}\): .*session file SHA-256 "
                                               rf"[0-9a-f]{{12}}\.\.\. now, {file_sha256(evolved)[:12]}\.\.\. recorded"):
        rebuild(check).assemble("cpu")
