"""The cell loop: one clock for the devices, the channel, the scheduler, the PHY, HARQ and the edge.

:class:`~sim.cell.loop.CellLoop` runs it and returns :class:`~sim.cell.loop.CellRecords`;
:mod:`sim.cell.harq` is its digital side (transport blocks, HARQ, outer-loop link adaptation).
"""

from sim.cell.loop import CellLoop, CellRecords

__all__ = ["CellLoop", "CellRecords"]
