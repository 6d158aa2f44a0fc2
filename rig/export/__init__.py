"""Exports of session files to other formats: :mod:`rig.export.nwb`."""
