"""The cell loop: one clock for the devices, the channel, the scheduler, the PHY, HARQ and the edge.

:class:`~sim.cell.loop.CellLoop` runs it, its outer loops starting as :class:`~sim.cell.adaptation.OuterLoopStart`
says, and returns :class:`~sim.cell.records.CellRecords`
(:mod:`sim.cell.records`: what it records, and where a user's payload units lie in its jobs);
:mod:`sim.cell.analog` is its analog side, :mod:`sim.cell.harq` its digital side (transport blocks, HARQ,
outer-loop link adaptation).
"""

from sim.cell.adaptation import OuterLoopStart
from sim.cell.loop import CellLoop
from sim.cell.records import CellRecords

__all__ = ["CellLoop", "CellRecords", "OuterLoopStart"]
