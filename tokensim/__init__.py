"""tokensim's Python API (:mod:`sim.api`): ``load_scenario``, ``make_scenario``, ``replace``, ``run``, ``sweep``."""

from sim.api import Results, SweepResults, load_scenario, make_scenario, replace, run, sweep

__all__ = ["Results", "SweepResults", "load_scenario", "make_scenario", "replace", "run", "sweep"]
