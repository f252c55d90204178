"""Which checkpoints a scenario needs and what shapes them (the cache key of each training stage), which
data it needs (:func:`data_key`), and what training them would cost here: what ``tokensim validate`` and
``--no-train`` say before anything runs."""

from __future__ import annotations

from models.checkpoints import checkpoint_path
from models.paths import digest
from sim.scenario import model_source
from sim.schema import Scenario

STAGES = ("align", "finetune")
STAGE_VERSIONS = {"align": 4, "finetune": 5}  # part of each stage's checkpoint key
ALIGNED_MODULES = ("transmitters", "receivers")  # what stage 1 trains and saves


def checkpoint_key(scenario: Scenario, stage: str = "finetune") -> tuple[str, dict]:
    """Hash of everything that shapes the model trained up to ``stage``, and that content.

    Users' SNRs, ids, compute speeds, the evaluation and the name are left
    out, and so is how the digital link decodes (``link.fidelity``, the
    decoder): one model serves every SNR of the training range, so changing them
    reuses the checkpoint. Which modalities each user of each group sends
    (and how many users share the carrier) shapes the channel in the loop, so
    it is in. The stage-1 key leaves out stage 2's settings, so fine-tuning
    variants start from one aligned checkpoint.
    """
    s = scenario
    users = s.users_by_id()
    layout = [[sorted(users[uid].modalities) for uid in g.users] for g in s.groups]
    training = s.training.model_dump(mode="json", exclude={"audio_encoder"})
    if stage == "align":
        training = {"alignment": training["alignment"], "train_tasks_per_group": training["train_tasks_per_group"]}
    elif not s.training.alignment.enabled:
        training["alignment"] = {"enabled": False}
    shaped_by = {
        "stage": stage,
        "seed": s.seed,
        "dataset": s.dataset.identity(),  # a folder set's: the content of its train and validation data
        "cell": s.cell.model_dump(mode="json", exclude={"bandwidth_hz"}),
        "channel": s.channel.model_dump(mode="json"),
        "layout": {"groups": layout, "num_users": len(s.users)},
        "tokens": {m: t.model_dump() for m, t in s.tokens.items()},
        "models": s.models.model_dump(mode="json"),
        "audio_encoder": s.training.audio_encoder.model_dump(mode="json"),
        "training": training,
        # a stage's version is bumped when its training or inputs change meaning (fine-tuning 5: validation
        # on common random numbers)
        "version": STAGE_VERSIONS[stage],
    }
    if s.link.mode == "digital":  # the noise proxy trains on; analog keys stay as they were
        # how TBs are judged at evaluation (fidelity, abstraction, decoder) does not reach the proxy
        judged = {"fidelity": True, "abstraction": True, "decoder": True, "num_bp_iter": True}
        shaped_by["link"] = s.link.model_dump(mode="json", exclude=judged | {"harq": {"round_trip_slots"}})
    return digest(shaped_by), shaped_by


def data_key(scenario: Scenario) -> str:
    """What a scenario's data and encoder features depend on (the seed draws the speech clips and trains the
    audio encoder): scenarios with the same key share every cached data and feature file, so a batch of runs
    prepares each key once, before its runs start, and two workers never build one cache entry at once."""
    s = scenario
    return digest(
        [s.seed, s.dataset.model_dump(mode="json"), s.models.model_dump(mode="json"), sorted(s.tokens)]
        + [s.training.audio_encoder.model_dump(mode="json")]
    )


# A rough guide to training time: the default recipe (300 alignment and 1200 fine-tuning steps of 64 tasks) took
# about 9 minutes of a fresh `make demo`'s 10 min 38 s on the README's 2-core CPU; other recipes are scaled by
# their task-steps (steps times batch size). Larger token counts, backbones or images take longer per step.
REFERENCE_TASK_STEPS = (300 + 1200) * 64
REFERENCE_TRAINING_MIN = 9.0


def training_plan(scenario: Scenario) -> list[dict]:
    """What evaluating ``scenario`` needs trained, stage by stage, without training anything.

    Each entry: ``stage``, ``key`` (the checkpoint's hash), ``path``, ``cached`` (the checkpoint is on disk),
    ``steps`` and ``batch_size`` of the stage, and ``minutes``, a rough time to train it on the README's
    2-core CPU (:data:`REFERENCE_TRAINING_MIN` scaled by task-steps). With ``model_from`` the plan is the
    source scenario's. Fine-tuning variants share one alignment checkpoint, which may be cached alone.
    """
    source = model_source(scenario) or scenario
    stages = (("align", source.training.alignment),) if source.training.alignment.enabled else ()
    plan = []
    for stage, settings in (*stages, ("finetune", source.training.finetune)):
        key, _ = checkpoint_key(source, stage)
        task_steps = settings.steps * settings.batch_size
        plan.append(
            {
                "stage": stage,
                "key": key,
                "path": str(checkpoint_path(key)),
                "cached": checkpoint_path(key).is_file(),
                "steps": settings.steps,
                "batch_size": settings.batch_size,
                "minutes": REFERENCE_TRAINING_MIN * task_steps / REFERENCE_TASK_STEPS,
            }
        )
    if plan[-1]["cached"]:  # a cached fine-tuned model needs nothing else
        plan = plan[-1:]
    return plan


def describe_plan(plan: list[dict]) -> str:
    """One line per stage: cached, or what it trains and about how long."""
    lines = []
    for entry in plan:
        name = {"align": "alignment (stage 1)", "finetune": "fine-tuning (stage 2)"}[entry["stage"]]
        if entry["cached"]:
            lines.append(f"{name}: checkpoint {entry['key']} is cached")
        else:
            lines.append(
                f"{name}: checkpoint {entry['key']} is not cached; trains {entry['steps']} steps of "
                f"{entry['batch_size']} tasks, about {max(entry['minutes'], 0.1):.1f} min on a 2-core CPU"
            )
    return "\n".join(lines)
