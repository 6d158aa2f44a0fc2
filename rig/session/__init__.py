"""The session file (HDF5): everything needed to understand, resume and replay a session.

The layout (schema version 2) is documented in ``docs/session-schema.md``.
In short::

    FILE.h5            the master file: header attributes, /references, and the
                       merged /blocks/NNNNNN and /checkpoints/NNNNNN groups
    FILE.h5.journal/   while a session runs (or after it was killed): one small
                       HDF5 file per completed block, NNNNNN.h5, laid out like
                       the master (/blocks/NNNNNN, /checkpoints/NNNNNN)

Why a journal: an HDF5 file that is open for writing when its process is
killed can be left unopenable (with ``libver="latest"`` the superblock's
"open for write" flag stays set, and 59 of 60 files killed mid-append did not
open) or with damaged metadata (2 of 60 with the default format). So no
HDF5 file is ever modified in place:

- each block is written to ``.NNNNNN.h5.partial``, fsync'ed, then renamed to
  ``NNNNNN.h5`` (an atomic rename: it is either there complete or not at all);
- the master is only ever replaced whole: built as ``.FILE.h5.merging`` (a
  copy plus the journal's blocks), fsync'ed and renamed over ``FILE.h5`` when
  the session ends (or is resumed); the journal is removed after that.

:func:`read_session` reads the master plus any journal, so a session killed at
any instant reads back with every completed block. Nothing here ever opens a
file for writing that someone may be reading, and :func:`read_session` opens
everything read-only. It never unpickles anything: optimizer checkpoints are
returned as bytes by :meth:`RecordedSession.checkpoint`, and each optimizer
reads its own (data-only) format.
"""
from __future__ import annotations

from rig.session.layout import (JOURNAL_SUFFIX, READABLE_VERSIONS, SCHEMA, SCHEMA_VERSION, SessionFileError,
                                SessionWriteError, block_digest, journal_dir, package_versions)
from rig.session.reader import Damage, RecordedBlock, RecordedSession, SessionScan, read_session, scan_session
from rig.session.writer import SessionWriter

__all__ = ["JOURNAL_SUFFIX", "READABLE_VERSIONS", "SCHEMA", "SCHEMA_VERSION", "Damage", "RecordedBlock",
           "RecordedSession", "SessionFileError", "SessionScan", "SessionWriteError", "SessionWriter", "block_digest",
           "journal_dir", "package_versions", "read_session", "scan_session"]
