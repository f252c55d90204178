"""Stage-2 training recipes of the default scenario over model seeds: the table of ``docs/training/index.md``.

Each recipe is a set of ``--set`` overrides of ``scenarios/cell_10users.yaml``; each is run for model
seeds 0..N-1 on the same data (``dataset.seed: 0``) with ``tokensim run`` (runs already done are read,
not rerun). Writes ``recipes.md`` and ``recipes.csv`` into ``--tables`` (default: the ``--out`` folder of the
runs; ``--tables docs/training`` rewrites the copies in this folder):

    PYTHONPATH=. .venv/bin/python docs/training/recipes.py [--out results/docs-training] [--seeds 5] [--only NAME ...]
        [--headline NAME] [--read-only] [--tables DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from sim.cli import main as tokensim
from sim.results import write_csv

RECIPES: dict[str, list[str]] = {
    # the default since the accuracy issue: batch 64, 1200 fine-tuning steps, best validation accuracy kept
    "batch 64, 1200 steps (default)": [],
    "batch 64, 600 steps": ["training.finetune.steps=600"],
    "batch 64, 600 steps, lr 2e-3": ["training.finetune.steps=600", "training.finetune.lr=2e-3"],
    "batch 32, 600 steps (the earlier default)": ["training.finetune.batch_size=32", "training.finetune.steps=600"],
}


def run(out: Path, seeds: int, only: list[str] | None, read_only: bool = False) -> list[dict]:
    rows = []
    for name in only or RECIPES:
        overrides = RECIPES[name]
        for seed in range(seeds):
            where = out / _folder(name) / f"seed{seed}"
            if not (where / "metrics.json").is_file() and read_only:
                continue
            if not (where / "metrics.json").is_file():
                args = ["run", "scenarios/cell_10users.yaml", "--out", str(where), "--quiet", "--set", f"seed={seed}"]
                assert tokensim(args + [x for s in overrides for x in ("--set", s)]) == 0
            m = json.loads((where / "metrics.json").read_text())
            training = m["training"]
            rows.append(
                {
                    "recipe": name,
                    "seed": seed,
                    "accuracy": m["accuracy"],
                    "selected_step": training.get("selected_step", ""),
                    "selected_val_accuracy": training.get("selected_val_accuracy", ""),
                    "final_val_accuracy": training.get("final_val_accuracy", ""),
                }
            )
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        "| recipe | test accuracy, mean ± std | worst seed | seeds | validation accuracy kept | step kept |",
        "| --- | ---: | ---: | --- | ---: | --- |",
    ]
    for name in dict.fromkeys(r["recipe"] for r in rows):
        mine = [r for r in rows if r["recipe"] == name]
        acc = [r["accuracy"] for r in mine]
        val = [r["selected_val_accuracy"] for r in mine if r["selected_val_accuracy"] != ""]
        lines.append(
            f"| {name} | {statistics.mean(acc):.3f} ± {statistics.stdev(acc) if len(acc) > 1 else 0:.3f} "
            f"| {min(acc):.3f} | {', '.join(f'{a:.3f}' for a in acc)} "
            f"| {statistics.mean(val):.3f} | {', '.join(str(r['selected_step']) for r in mine)} |"
        )
    return "\n".join(lines) + "\n"


def headline(out: Path, name: str, seeds: int) -> str:
    """The default scenario over the seeds of recipe ``name``: overall, per question type and per user,
    mean ± std over seeds (the README's headline table)."""
    runs = [json.loads((out / _folder(name) / f"seed{s}" / "metrics.json").read_text()) for s in range(seeds)]

    def stat(values) -> str:
        return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"

    acc = [m["accuracy"] for m in runs]
    lines = [
        f"Recipe: {name}; model seeds 0-{seeds - 1}, dataset.seed 0, the same {runs[0]['tasks']} test tasks.",
        "",
        f"accuracy {stat(acc)} (worst seed {min(acc):.3f}, best {max(acc):.3f}); "
        f"Wilson 95 % interval of seed 0 over its tasks {runs[0]['accuracy_ci95'][0]:.3f}-"
        f"{runs[0]['accuracy_ci95'][1]:.3f}; always the most frequent answer: {runs[0]['majority_answer_rate']:.3f}",
        "",
        "| question type | accuracy |",
        "| --- | ---: |",
    ]
    for q in runs[0]["accuracy_by_question_type"]:
        lines.append(f"| {q} | {stat([m['accuracy_by_question_type'][q] for m in runs])} |")
    lines += [
        "",
        "| user | sends | SNR dB | SNR per RE dB | accuracy | token NMSE | Shannon-equiv. bits/task |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for i, u in enumerate(runs[0]["users"]):
        mine = [m["users"][i] for m in runs]
        lines.append(
            f"| {u['id']} | {' + '.join(u['modalities'])} | {u['snr_db']:g} | {u['snr_re_db']:.1f} "
            f"| {stat([x['accuracy'] for x in mine])} | {stat([x['token_nmse'] for x in mine])} "
            f"| {statistics.mean(x['bits_per_task'] for x in mine):.0f} |"
        )
    return "\n".join(lines) + "\n"


def _folder(name: str) -> str:
    return name.replace(" ", "-").replace(",", "").replace("(", "").replace(")", "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/docs-training"))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--only", nargs="*", help="recipe names to run")
    parser.add_argument("--headline", help="also write default.md: this recipe's seeds, per question type and user")
    parser.add_argument("--read-only", action="store_true", help="tabulate the seeds already run; run nothing")
    parser.add_argument("--tables", type=Path, help="where the tables go (default: --out)")
    args = parser.parse_args()
    rows = run(args.out, args.seeds, args.only, args.read_only)
    here = args.tables or args.out
    here.mkdir(parents=True, exist_ok=True)
    if args.headline:
        (here / "default.md").write_text(headline(args.out, args.headline, args.seeds))
    (here / "recipes.md").write_text(table(rows))
    write_csv(here / "recipes.csv", rows)
    print(table(rows))


if __name__ == "__main__":
    main()
