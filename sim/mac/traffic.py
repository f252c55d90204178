"""When tasks arrive, and the first-come-first-served queues of the devices and the edge.

``traffic.arrival``:

- ``snapshot``: every group has one task at t = 0, and the evaluation's tasks
  are independent snapshots of the cell (task ``k`` of every group shares
  snapshot ``k``). Latency then measures one round of the whole cell.
- ``poisson``: each group's tasks arrive as a Poisson process of
  ``traffic.rate_per_s`` tasks per second, all on one timeline; every user of
  the group starts on the task when it arrives. Queues build up when the
  offered load nears what the devices, the carrier or the edge can serve.

:func:`fifo` is one server that serves jobs one at a time in the order they
come (Lindley's recursion): each user device that encodes its tasks, and the
edge server that answers them.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import Field

from core.schema import Strict


class TrafficConfig(Strict):
    arrival: Literal["snapshot", "poisson"] = Field(
        "snapshot",
        description="snapshot: every group one task at t = 0, each task its own snapshot; poisson: one timeline",
    )
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


def fifo(ready_s: torch.Tensor, service_s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Start and finish times of jobs at one server that serves them one at a time, first come first served.

    Lindley's recursion ``finish_i = max(finish_{i-1}, ready_i) + service_i`` in closed form: with ``C``
    the cumulative service in ready order, ``finish_i = C_i + max_{k <= i} (ready_k - C_{k-1})``. Jobs
    with equal ready times keep their order.

    :param ready_s: [..., num_jobs], float64. When each job reaches the server (any order).
    :param service_s: [..., num_jobs], float64 (broadcast). How long the server takes for it.
    :output start_s, finish_s: [..., num_jobs], float64, in the order of ``ready_s``.

    >>> fifo(torch.tensor([0.0, 0.0, 5.0]), torch.tensor(2.0))
    (tensor([0., 2., 5.], dtype=torch.float64), tensor([2., 4., 7.], dtype=torch.float64))
    """
    ready = ready_s.to(torch.float64)
    service = torch.as_tensor(service_s, dtype=torch.float64, device=ready.device).expand_as(ready)
    order = torch.argsort(ready, dim=-1, stable=True)
    r, s = ready.gather(-1, order), service.gather(-1, order)
    done_before = s.cumsum(-1) - s  # C_{k-1}
    finish_sorted = s.cumsum(-1) + torch.cummax(r - done_before, dim=-1).values
    finish = torch.empty_like(finish_sorted).scatter_(-1, order, finish_sorted)
    return finish - service, finish
