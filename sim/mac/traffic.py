"""When tasks arrive.

``traffic.arrival``:

- ``snapshot``: every group has one task at t = 0, and the evaluation's tasks
  are independent snapshots of the cell (task ``k`` of every group shares
  snapshot ``k``). Latency then measures one round of the whole cell.
- ``poisson``: each group's tasks arrive as a Poisson process of
  ``traffic.rate_per_s`` tasks per second, all on one timeline; every user of
  the group starts on the task when it arrives. Queues build up when the
  offered load nears what the carrier can carry.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from models.config import Strict


class TrafficConfig(Strict):
    arrival: Literal["snapshot", "poisson"] = "snapshot"
    rate_per_s: float | None = Field(None, gt=0, description="poisson: tasks per second of each group")
    deadline_ms: float = Field(20.0, gt=0, description="a task later than this from its arrival misses")


def arrival_times_s(traffic: TrafficConfig, num_groups: int, tasks_per_group: int, seed: int) -> np.ndarray:
    """[num_groups, tasks_per_group] arrival time of each group's tasks, seconds, non-decreasing per group.

    >>> arrival_times_s(TrafficConfig(), 2, 3, seed=0)
    array([[0., 0., 0.],
           [0., 0., 0.]])
    """
    if traffic.arrival == "snapshot":
        return np.zeros((num_groups, tasks_per_group))
    gaps = np.random.default_rng(seed).exponential(1 / traffic.rate_per_s, (num_groups, tasks_per_group))
    return gaps.cumsum(1)
