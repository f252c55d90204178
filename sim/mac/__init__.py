"""Medium access: who gets which resource blocks, and for how long."""

# ``scheduler.policy`` names, the keys of ``sim.mac.scheduler.SCHEDULERS``; kept here so that the
# scenario schema loads without torch and Sionna (tests/sim/test_mac.py holds the two equal).
SCHEDULER_POLICIES = ("equal-share", "round-robin", "proportional-fair", "max-rate", "task-aware", "token-aware")
