"""Sessions as NWB (Neurodata Without Borders) files: ``rig export-nwb`` (pynwb is the optional ``nwb`` extra)."""
from rig.export.nwb.export import (INSTALL_HINT, NWB_BEHAVIOR_LAYOUT, NWB_LAYOUT, ExportSummary, NwbMetadata,
                                   NwbUnavailableError, export_nwb)

__all__ = ["INSTALL_HINT", "NWB_BEHAVIOR_LAYOUT", "NWB_LAYOUT", "ExportSummary", "NwbMetadata", "NwbUnavailableError",
           "export_nwb"]
