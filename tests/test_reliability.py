"""Faults that must not cost finished work: corrupt cache files, and two runs sharing one cache."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from sim.cli import main
from tests.conftest import ROOT


def _run(path, out) -> dict:
    assert main(["run", str(path), "--out", str(out), "--quiet"]) == 0
    return json.loads((out / "metrics.json").read_text())


def _artefacts(cache, out):
    """The cached artefacts of the tiny run written to ``out``, by kind."""
    found = {
        "checkpoint": [Path(json.loads((out / "manifest.json").read_text())["checkpoint_path"])],  # fine-tuned
        "features": sorted((cache / "features").glob("*.safetensors")),
        "audio encoder": sorted((cache / "encoders").glob("*.safetensors")),
        "speech": sorted(cache.rglob("speech-*.npz")),
    }
    assert all(found.values()), {k: len(v) for k, v in found.items()}
    return found


def test_corrupt_cache_files_are_moved_aside_rebuilt_and_give_the_same_metrics(
    tiny, write_scenario, tmp_path, monkeypatch, capsys
):
    from models.cache import audit, check
    from sim.info import collect_info

    cache = tmp_path / "cache"
    monkeypatch.setenv("TOKENSIM_CACHE", str(cache))
    tiny["seed"] = 21
    path = write_scenario(tiny)
    clean = _run(path, tmp_path / "clean")
    found = _artefacts(cache, tmp_path / "clean")
    assert all(check(p) for ps in found.values() for p in ps)  # every artefact is sealed with its digest

    flipped = found["features"][0]  # a flipped byte: the digest catches it, and info lists it
    data = bytearray(flipped.read_bytes())
    data[-1] ^= 0xFF
    flipped.write_bytes(bytes(data))
    assert [p for p, _ in audit(cache)] == [flipped]
    assert str(flipped) in " ".join(collect_info()["cache"]["corrupt"])
    for kind in ("checkpoint", "audio encoder", "speech"):  # truncated, as by a killed copy or a full disk
        victim = found[kind][0]
        victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 3])

    capsys.readouterr()
    again = _run(path, tmp_path / "again")
    err = capsys.readouterr().err
    assert again == clean
    for victim in (flipped, *(found[k][0] for k in ("checkpoint", "audio encoder", "speech"))):
        assert f"cached file {victim} is corrupt" in err
        assert victim.with_name(victim.name + ".corrupt").is_file() and check(victim)  # moved aside, rebuilt
    assert json.loads((tmp_path / "again" / "manifest.json").read_text())["trained_now"]
    assert audit(cache) == []


def test_two_runs_on_one_missing_checkpoint_train_it_once_and_agree(tiny, write_scenario, tmp_path):
    tiny["seed"] = 22
    path = write_scenario(tiny)
    env = {**os.environ, "TOKENSIM_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "sim.cli", "run", str(path), "--quiet", "--out"]
    runs = [
        subprocess.Popen([*command, str(tmp_path / f"run{i}")], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
        for i in range(2)
    ]
    for run in runs:
        _, err = run.communicate(timeout=600)
        assert run.returncode == 0, err
    metrics = [json.loads((tmp_path / f"run{i}" / "metrics.json").read_text()) for i in range(2)]
    assert metrics[0] == metrics[1]
    trained = [json.loads((tmp_path / f"run{i}" / "manifest.json").read_text())["trained_now"] for i in range(2)]
    assert sorted(trained) == [False, True]  # one trained it, the other waited and loaded it
    assert not list((tmp_path / "cache").rglob("*.tmp"))  # nothing half-written left behind


def _stop(command, env, marker: str, sig) -> tuple[int, str]:
    """Start ``command``, send ``sig`` once ``marker`` appears on its stderr; its exit code and stderr.

    The child gets SIGINT's default disposition back: a shell that starts jobs in the background (as CI
    runners may) leaves SIGINT ignored, and an ignored signal stays ignored across exec. Its stderr is read
    unbuffered, byte by byte, so that nothing read ahead is lost to ``communicate``.
    """
    proc = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        bufsize=0,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    seen = b""
    while marker.encode() not in seen:
        byte = proc.stderr.read(1)
        if not byte:
            break
        seen += byte
    proc.send_signal(sig)
    _, rest = proc.communicate(timeout=600)
    return proc.returncode, (seen + rest).decode(errors="replace")


def _leftovers(root) -> list:
    return [p for p in Path(root).rglob("*") if p.name.endswith((".tmp", ".partial", ".old"))]


@pytest.mark.parametrize("sig, code, name", [(signal.SIGINT, 130, "SIGINT"), (signal.SIGTERM, 143, "SIGTERM")])
def test_a_stopped_run_keeps_what_finished_and_a_rerun_finishes_it(tiny, write_scenario, tmp_path, sig, code, name):
    tiny["seed"] = code  # a checkpoint of its own
    tiny["training"]["finetune"]["steps"] = 40
    path = write_scenario(tiny)
    env = {**os.environ, "TOKENSIM_CACHE": str(tmp_path / "cache")}
    out = tmp_path / "run"
    command = [sys.executable, "-m", "sim.cli", "run", str(path), "--out", str(out)]
    returncode, err = _stop(command, env, "fine-tuning", sig)  # stopped in stage 2
    assert returncode == code, err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"tokensim run: stopped by {name}; kept ") and "checkpoints/" in last, last
    assert "Traceback" not in err
    assert not out.exists() and not _leftovers(tmp_path)  # no run directory, nothing half-written
    (aligned,) = (tmp_path / "cache" / "checkpoints").glob("*.safetensors")  # stage 1 had finished
    before = aligned.stat().st_mtime_ns
    rerun = subprocess.run([*command, "--quiet"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert (out / "manifest.json").is_file() and not _leftovers(tmp_path)
    assert aligned.stat().st_mtime_ns == before  # the rerun reused stage 1 and trained stage 2 only


@pytest.mark.parametrize("sig, code, name", [(signal.SIGINT, 130, "SIGINT"), (signal.SIGTERM, 143, "SIGTERM")])
def test_a_stopped_sweep_keeps_its_finished_points_and_a_rerun_runs_the_rest(
    tiny, write_scenario, tmp_path, sig, code, name
):
    tiny["seed"] = 129
    tiny["evaluation"]["tasks_per_group"] = 1500  # points slow enough to stop one half-way
    tiny["sweep"] = {"grid": {"users.q1.snr_db": [0, 10, 20]}}
    path = write_scenario(tiny)
    env = {**os.environ, "TOKENSIM_CACHE": str(tmp_path / "cache")}
    out = tmp_path / "sweep"
    command = [sys.executable, "-m", "sim.cli", "sweep", str(path), "--out", str(out)]
    returncode, err = _stop(command, env, ": accuracy", sig)  # the first point has finished
    assert returncode == code, err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"tokensim sweep: stopped by {name}; kept ") and "users.q1.snr_db=0" in last, last
    finished = [p for p in (out / "points").iterdir() if (p / "manifest.json").is_file()]
    assert len(finished) == 1 and len(list((out / "points").iterdir())) == 1 and not _leftovers(tmp_path)
    rerun = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert "1 of 3 points finished before; running the other 2" in rerun.stderr
    assert len(list((out / "points").iterdir())) == 3 and not _leftovers(tmp_path)


def test_a_run_refuses_an_out_folder_that_is_not_a_run_directory(tiny, write_scenario, tmp_path, capsys):
    """A run replaces its --out as a whole, so a folder of other files is refused before any work."""
    path = write_scenario(tiny)
    precious = tmp_path / "experiments"
    precious.mkdir()
    (precious / "notes.txt").write_text("a month of work")
    assert main(["run", str(path), "--out", str(precious), "--quiet"]) == 2
    assert "exists and is not a run directory" in capsys.readouterr().err
    assert (precious / "notes.txt").read_text() == "a month of work" and len(list(precious.iterdir())) == 1


def test_a_full_disk_names_the_path_and_leaves_no_run_directory(tiny, write_scenario, tmp_path, monkeypatch, capsys):
    """ENOSPC while the run directory is written: one line naming the file, exit 1, no directory that
    could later look finished, nothing half-written."""
    import errno

    import sim.results

    real = sim.results.write_text

    def full(path, text):
        if path.name == "per_task.csv":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, text)

    monkeypatch.setattr(sim.results, "write_text", full)
    path = write_scenario(tiny)
    out = tmp_path / "run"
    assert main(["run", str(path), "--out", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "cannot write " in err and "per_task.csv: No space left on device" in err
    assert not out.exists() and not _leftovers(tmp_path)
