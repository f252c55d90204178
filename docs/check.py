"""Every command the README and docs show, checked as written; the cheap ones run, and their numbers compared.

    PYTHONPATH=. .venv/bin/python docs/check.py          # every command parses; the cheap ones run
    PYTHONPATH=. .venv/bin/python docs/check.py --full   # also the default run, its figures, a 2-point sweep,
                                                         # and the README's numbers against what they give

What it does with a command found in a Markdown code span or code block:

- ``tokensim ...``: parsed by tokensim's own argument parser, so a flag the CLI lost or renamed fails; for
  ``run``, ``train`` and ``sweep`` the scenario with its ``--set``/``--zip`` items must validate (every point).
  ``validate``, ``keys`` and ``info`` run (seconds); the README's
  example of a bad scenario must fail with exit 2 and print the message the README shows.
- ``python docs/...py``: the script exists, ``--help`` works, and every flag the docs give it is in its help.
  A script that only tabulates files (``bench_table.py``, ``compression/table.py``) runs when its input is in
  the repository, and every table line it prints must be on the page that shows the command.
- Synopses (``tokensim run SCENARIO [--out DIR]``), output lines and ``make`` targets are not commands here
  (``.ci/run`` runs ``make test``'s suite; ``make demo`` is ``tokensim run scenarios/cell_10users.yaml``).

``--full`` (minutes; needs the default checkpoint cached, as after ``make demo``, unless ``--train``) runs
``tokensim run scenarios/cell_10users.yaml``, ``tokensim plot`` on it and the README's two-point sweep into
``results/check/``, and compares the README's headline numbers with the run's ``metrics.json``. It writes
nothing outside ``results/check/``. Exit 0 when everything holds, 1 otherwise, with one line per failure.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLACEHOLDERS = re.compile(r" \[-|\.\.\.|\bSCENARIO\b|\bDIR\b|\bKEY\b|\bN\b")  # a synopsis, not a command
CHEAP = ("validate", "keys", "info")
TABULATORS = ("bench_table.py", "table.py")  # scripts that only tabulate files: run when their input is here


@dataclass
class Command:
    where: str  # file:line
    text: str  # as written, one line
    in_block: bool = False  # from a code block (where the lines after it may show its output)

    @property
    def argv(self) -> list[str]:
        words = shlex.split(self.text.split(" #")[0])
        words = words[: words.index(">")] if ">" in words else words  # a redirection is the shell's
        while words and "=" in words[0] and not words[0].startswith("-"):  # PYTHONPATH=. and the like
            words = words[1:]
        return words


def documents() -> list[Path]:
    """The README and every Markdown page of docs/ but the records of runs."""
    return [ROOT / "README.md", *sorted(p for p in (ROOT / "docs").rglob("*.md") if "runs" not in p.parts)]


def commands(paths: list[Path] | None = None) -> list[Command]:
    """Commands in code spans (also those a line break splits) and code blocks (continuation lines joined),
    synopses and output left out, in the order of the page."""
    found = []
    for path in paths or documents():
        name = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
        lines = path.read_text().splitlines()
        prose, in_block = [], False
        for number, line in enumerate(lines, 1):
            if line.startswith("```"):
                in_block = not in_block
                prose.append("")
                continue
            prose.append("" if in_block else line)
            if not in_block:
                continue
            candidate = line.strip().removeprefix("$ ")
            rest = lines[number:]
            while candidate.endswith("\\") and rest:  # continued on the next lines
                candidate = candidate[:-1].rstrip() + " " + rest.pop(0).strip()
            if _is_command(candidate):
                found.append(Command(f"{name}:{number}", candidate, in_block=True))
        text = "\n".join(prose)
        for span in re.finditer(r"`([^`]+)`", text):
            candidate = " ".join(span.group(1).split()).removeprefix("$ ")
            if _is_command(candidate):
                found.append(Command(f"{name}:{text.count(chr(10), 0, span.start()) + 1}", candidate))
    return sorted(found, key=lambda c: (c.where.rsplit(":", 1)[0], int(c.where.rsplit(":", 1)[1])))


def _is_command(text: str) -> bool:
    if not re.match(r"(PYTHONPATH=\S+ )?(\.venv/bin/)?(tokensim|python) \S", text):
        return False
    words = text.split()
    sub = words[words.index(next(w for w in words if w.endswith(("tokensim", "python")))) + 1]
    return not sub.endswith(":") and not PLACEHOLDERS.search(text)  # "tokensim validate: error": output


def check_parses(command: Command) -> str | None:
    """``None`` if tokensim's parser takes the command and, for ``run``, ``train`` and ``sweep``, the scenario
    with its ``--set``/``--zip`` items validates (every point of a sweep); else why not."""
    from sim.cli import _load
    from sim.cli_parser import build_parser
    from sim.errors import ScenarioError
    from sim.sweep import load_sweep

    argv = command.argv[1:]
    if len(argv) == 1 and argv[0] not in ("info", "keys", "bench", "--help"):
        return None  # "tokensim run" in prose names the command; it is not one to run
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            args = build_parser().parse_args(argv)
    except SystemExit as exit:
        return f"does not parse: {stderr.getvalue().strip().splitlines()[-1]}" if exit.code else None
    if args.command not in ("run", "train", "sweep"):
        return None
    args.scenario = ROOT / args.scenario  # the docs' commands run from the repository's root
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            if args.command == "sweep":
                points = load_sweep(args.scenario, args.overrides, args.replicates, args.zips).points()
                bad = [p for p in points if p.error]
                return f"sweep point {bad[0].label}: {bad[0].error}" if bad else None
            _load(args)
    except ScenarioError as err:
        return f"its scenario does not validate: {err}"
    return None


def check_script(command: Command) -> str | None:
    """A ``python docs/...py`` command: the script exists, ``--help`` works, and names every flag given."""
    argv = command.argv
    script = ROOT / argv[1]
    if not script.is_file():
        return f"{argv[1]} does not exist"
    inputs = [w for w in argv[2:] if not w.startswith("-")]
    if script.name in TABULATORS and all((ROOT / w).is_file() for w in inputs):
        # a table from committed data, cheap: it must print the table the page showing it holds
        out = _python([str(script), *argv[2:]])
        if out.returncode:
            return f"exit {out.returncode}: {out.stderr.strip()[-300:]}"
        page = (ROOT / command.where.rsplit(":", 1)[0]).read_text()
        stale = [line for line in out.stdout.splitlines() if line.startswith("|") and line not in page]
        return f"prints table lines its page lacks (rebuild it): {stale[0]}" if stale else None
    out = _python([str(script), "--help"])
    if out.returncode:
        return f"--help exits {out.returncode}: {out.stderr.strip()[-300:]}"
    flags = set(re.findall(r"^\s+(?:-\w(?: \S+)?, )?(--[\w-]+)", out.stdout, re.M))  # the options it defines
    missing = [w.split("=")[0] for w in argv[2:] if w.startswith("--") and w.split("=")[0] not in flags]
    return f"flags not in its --help: {', '.join(missing)}" if missing else None


def run_cheap(command: Command) -> str | None:
    """Run a ``validate``/``keys``/``info`` command; the README's bad-scenario example must fail as shown."""
    argv = command.argv[1:]
    if argv[0] not in CHEAP or argv == ["validate"]:  # "tokensim validate" in prose names the command
        return None
    out = _tokensim(argv)
    expected = _shown_error(command)
    if expected:
        if out.returncode != 2:
            return f"the page shows it failing, but it exits {out.returncode}"
        unlike = [line for line in expected if line not in out.stderr]
        return f"prints {out.stderr.strip()!r}, the page shows {unlike[0]!r}" if unlike else None
    return f"exit {out.returncode}: {out.stderr.strip()[-300:]}" if out.returncode else None


def _shown_error(command: Command) -> list[str]:
    """The error lines a code block shows right after ``command`` (from ``tokensim ...: error in``), each
    cut where the page abbreviates it with ``...``; none for a command in prose or one shown succeeding."""
    if not command.in_block:
        return []
    path, line = command.where.rsplit(":", 1)
    shown = []
    for text in (ROOT / path).read_text().splitlines()[int(line) :]:
        if text.startswith(("```", "$ ")):
            break
        shown.append(text.strip().split("...")[0].rstrip(", "))
    if not shown or ": error in " not in shown[0]:
        return []
    return [line for line in shown if line]


def _tokensim(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sim.cli", *argv], cwd=ROOT, capture_output=True, text=True)


def _python(argv: list[str]) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(ROOT), "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin"}
    return subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, env=env)


def check_all(found: list[Command]) -> list[str]:
    """Every check of every command (parse, run the cheap ones, scripts' help); one line per failure."""
    failures = []
    for command in found:
        argv = command.argv
        if Path(argv[0]).name.startswith("python"):
            problem = check_script(command)
        else:
            problem = check_parses(command) or run_cheap(command)
        if problem:
            failures.append(f"{command.where}: `{command.text}` {problem}")
    return failures


# --------------------------------------------------------------------------------------- --full

# (what the README says, as a regular expression whose group is the number, the metrics.json value it is)
HEADLINE = [
    (r"Seed 0 alone: (0\.\d{3})", lambda m: m["accuracy"], "{:.3f}"),
    (r"Latency is (\d+\.\d\d) ms on\naverage", lambda m: m["latency_ms"]["mean"], "{:.2f}"),
    (r"average \(p95 (\d+\.\d\d)\)", lambda m: m["latency_ms"]["p95"], "{:.2f}"),
    (r"Always giving the most frequent answer scores (0\.\d{3})", lambda m: m["majority_answer_rate"], "{:.3f}"),
]
SWEEP = "tokensim sweep scenarios/cell_10users.yaml --set snr_db=0,10"


def check_full(train: bool) -> list[str]:
    """Run the default scenario, plot it, run the README's two-point sweep; compare the headline numbers."""
    out = ROOT / "results" / "check"
    shutil.rmtree(out, ignore_errors=True)  # a sweep resumes: a second check would run nothing
    run = _tokensim(["run", "scenarios/cell_10users.yaml", "--out", str(out / "default"), "--quiet"]
                    + ([] if train else ["--no-train"]))  # fmt: skip
    if run.returncode == 3:
        return ["--full needs the default checkpoint (run `make demo` first, or pass --train)"]
    if run.returncode:
        return [f"tokensim run scenarios/cell_10users.yaml: exit {run.returncode}: {run.stderr.strip()[-300:]}"]
    failures = []
    metrics = json.loads((out / "default" / "metrics.json").read_text())
    readme = (ROOT / "README.md").read_text()
    for pattern, value, fmt in HEADLINE:
        match = re.search(pattern, readme)
        if match is None:
            failures.append(f"README: no longer says {pattern!r}")
        elif match.group(1) != fmt.format(value(metrics)):
            failures.append(f"README says {match.group(0)!r}; the run gives {fmt.format(value(metrics))}")
    for argv in (["plot", str(out / "default")], [*SWEEP.split()[1:], "--out", str(out / "sweep"), "--quiet"]):
        step = _tokensim(argv if train or argv[0] == "plot" else [*argv, "--no-train"])
        if step.returncode:
            failures.append(f"tokensim {' '.join(argv)}: exit {step.returncode}: {step.stderr.strip()[-300:]}")
    if SWEEP not in readme:
        failures.append(f"README: no longer shows `{SWEEP}`")
    plotted = _tokensim(["plot", str(out / "sweep")])
    if plotted.returncode:
        failures.append(f"tokensim plot {out / 'sweep'}: exit {plotted.returncode}")
    return failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="also run the default scenario, plot, a 2-point sweep")
    parser.add_argument("--train", action="store_true", help="with --full: train the default model if not cached")
    args = parser.parse_args(argv)
    found = commands()
    failures = check_all(found)
    if args.full:
        failures += check_full(args.train)
    for line in failures:
        print(line)
    print(f"docs/check.py: {len(found)} documented commands, {len(failures)} failure(s)", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
