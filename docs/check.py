"""Every command the README and docs show, checked as written; the cheap ones run, and their numbers compared.

    PYTHONPATH=. .venv/bin/python docs/check.py          # every command parses; the cheap ones run
    PYTHONPATH=. .venv/bin/python docs/check.py --full   # also the default run, its figures, a 2-point sweep,
                                                         # and the README's numbers against what they give

What it does with a command found in a Markdown code span or code block:

- ``tokensim ...``: parsed by tokensim's own argument parser, so a flag the CLI lost or renamed fails.
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
    """Commands in code spans and code blocks (continuation lines joined), synopses and output left out."""
    found = []
    for path in paths or documents():
        text = path.read_text()
        in_block = False
        for number, line in enumerate(text.splitlines(), 1):
            if line.startswith("```"):
                in_block = not in_block
                continue
            candidates = [line.strip()] if in_block else re.findall(r"`([^`]+)`", line)
            for candidate in candidates:
                candidate = candidate.strip().removeprefix("$ ")
                if candidate.endswith("\\"):  # a block's command continued on the next lines
                    rest = text.splitlines()[number:]
                    while candidate.endswith("\\") and rest:
                        candidate = candidate[:-1].rstrip() + " " + rest.pop(0).strip()
                if _is_command(candidate):
                    name = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
                    found.append(Command(f"{name}:{number}", candidate))
    return found


def _is_command(text: str) -> bool:
    if not re.match(r"(PYTHONPATH=\S+ )?(\.venv/bin/)?(tokensim|python) \S", text):
        return False
    words = text.split()
    sub = words[words.index(next(w for w in words if w.endswith(("tokensim", "python")))) + 1]
    return not sub.endswith(":") and not PLACEHOLDERS.search(text)  # "tokensim validate: error": output


def check_parses(command: Command) -> str | None:
    """``None`` if tokensim's parser takes the command, else why not."""
    from sim.cli import build_parser

    argv = command.argv[1:]
    if len(argv) == 1 and argv[0] not in ("info", "keys", "bench", "--help"):
        return None  # "tokensim run" in prose names the command; it is not one to run
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            build_parser().parse_args(argv)
    except SystemExit as exit:
        if exit.code:
            return f"does not parse: {stderr.getvalue().strip().splitlines()[-1]}"
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
    missing = [w.split("=")[0] for w in argv[2:] if w.startswith("--") and w.split("=")[0] not in out.stdout]
    return f"flags not in its --help: {', '.join(missing)}" if missing else None


def run_cheap(command: Command) -> str | None:
    """Run a ``validate``/``keys``/``info`` command; the README's bad-scenario example must fail as shown."""
    argv = command.argv[1:]
    if argv[0] not in CHEAP:
        return None
    out = _tokensim(argv)
    expected = _shown_error(command)
    if expected is not None:
        if out.returncode != 2:
            return f"the README shows it failing, but it exits {out.returncode}"
        if expected not in out.stderr:
            return f"prints {out.stderr.strip()!r}, the README shows {expected!r}"
        return None
    return f"exit {out.returncode}: {out.stderr.strip()[-300:]}" if out.returncode else None


def _shown_error(command: Command) -> str | None:
    """The error a code block shows right after ``command`` (``tokensim validate: error ...``), if any."""
    path, line = command.where.rsplit(":", 1)
    lines = (ROOT / path).read_text().splitlines()[int(line) :]
    shown = []
    for text in lines:
        if text.startswith("```"):
            break
        shown.append(text.strip())
    joined = " ".join(shown)
    if "error in" not in joined:
        return None
    return joined[joined.index(": error in") + 2 :].split(" ", 4)[-1][:60]  # past "error in FILE:"


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
