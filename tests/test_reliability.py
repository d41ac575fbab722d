"""Reliability: one writer per output, kill at any moment and resume, and error messages that keep
sono3d's words first.

Kills use real processes: a verb runs in a subprocess that ``SONO3D_TEST_KILL_AT=<stage>[:<n>]``
makes SIGKILL itself at a chosen moment (``sono3d.io.testing``), or that the test kills after a
random delay; the rerun must complete and equal an uninterrupted run, with no temporary file left
and nothing half-written under a final name.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numba
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from sono3d.cli import app
from sono3d.errors import BusyError, reason
from sono3d.heart.cohort import generate_cohort
from sono3d.io import read_volume, write_sweep
from sono3d.io.atomic import atomic_path, stale_temporaries
from sono3d.io.lock import LOCK_SUFFIX, lock_path, writer_lock
from sono3d.io.npz import read_npz, write_npz
from sono3d.phantoms.uterus import build_uterus
from sono3d.simulate.sweeps import SweepConfig, simulate_sweep

from conftest import ROOT, one_line_error

runner = CliRunner()

ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
       "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
ENV.pop("SONO3D_TEST_KILL_AT", None)


def run_python(code: str, kill_at: str | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    env = dict(ENV)
    if kill_at:
        env["SONO3D_TEST_KILL_AT"] = kill_at
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=timeout)


def assert_killed(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr[-2000:])


def files_of(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones included) by relative path."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def no_leftovers(folder: Path) -> None:
    """No temporary file of an atomic write and no lock marker under or beside ``folder``."""
    assert not stale_temporaries(folder)
    assert not [p for p in folder.rglob("*") if ".tmp" in p.name], [p.name for p in folder.rglob("*.tmp*")]
    assert not lock_path(folder).exists()


# --------------------------------------------------------------------------------------------
# Messages
# --------------------------------------------------------------------------------------------

def test_reason_shortens_at_a_sentence_or_word_never_inside_a_word():
    long = ("Weights only load failed. In PyTorch 2.6, we changed the default value of the weights_only argument "
            "in torch.load from False to True. Re-running torch.load with weights_only set to False will likely "
            "succeed, but it can result in arbitrary code execution. Do it only if you got the file from a "
            "trusted source.")
    text = reason(ValueError(long), limit=120)
    assert text.endswith(" ...") and len(text) <= 124
    kept = text[:-4]
    assert long.startswith(kept) and long[len(kept)] == " "  # cut at a boundary, not mid-word
    one_word = reason(ValueError("x" * 500), limit=50)
    assert "x" not in one_word  # a single over-long word is not cut either
    assert reason(ValueError("  short \n message ")) == "short message"
    assert reason(KeyError()) == "KeyError"


def test_npz_reader_refuses_pickles_and_wrong_files_in_its_own_words(tmp_path):
    np.savez(tmp_path / "obj.npz", echo=np.array([{"a": 1}], dtype=object))
    (tmp_path / "img.npz").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    import pickle

    (tmp_path / "pk.npz").write_bytes(pickle.dumps({"echo": 1}, protocol=4))
    good = write_npz(tmp_path / "good.npz", {"echo": np.ones((2, 3), np.float32)})
    (tmp_path / "cut.npz").write_bytes(good.read_bytes()[:40])
    expected = ".npz with 'echo' [P, 6, H, W]"
    for name, words in (("obj.npz", "Python objects"), ("img.npz", "PNG image"), ("pk.npz", "Python pickle"),
                        ("cut.npz", "truncated or corrupt")):
        with pytest.raises(Exception) as info:
            read_npz(tmp_path / name, expected, "views")
        msg = str(info.value)
        assert msg.startswith(f"{tmp_path / name}: ") and words in msg, msg
        if name != "cut.npz":
            assert f"not a views file" in msg and f"expected {expected}" in msg
    assert np.array_equal(read_npz(good)["echo"], np.ones((2, 3), np.float32))


def test_write_npz_bytes_depend_only_on_the_arrays(tmp_path):
    arrays = {"a": np.arange(12.0).reshape(3, 4), "b": np.array("x")}
    first = write_npz(tmp_path / "1.npz", arrays).read_bytes()
    time.sleep(2.1)  # zip timestamps have a 2-second resolution
    assert write_npz(tmp_path / "2.npz", arrays).read_bytes() == first
    with np.load(tmp_path / "2.npz") as z:
        assert np.array_equal(z["a"], arrays["a"]) and str(z["b"]) == "x"


# --------------------------------------------------------------------------------------------
# One writer per output
# --------------------------------------------------------------------------------------------

HOLDER = """
import sys
from contextlib import ExitStack
from sono3d.io.lock import writer_lock
with ExitStack() as stack:
    for path in sys.argv[1:]:
        stack.enter_context(writer_lock(path))
    print("held", flush=True)
    sys.stdin.read()
"""


def start_holder(*paths: Path) -> subprocess.Popen:
    """A second process holding the locks of ``paths`` until its stdin is closed (or it is killed)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, *map(str, paths)], env=ENV, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.strip() == "held", (line, proc.stderr.read() if proc.poll() is not None else "")
    return proc


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.stdin.close()
        proc.wait(timeout=60)


# Every verb that writes, with arguments that reach its lock (output named "OUT" under tmp).
BUSY_VERBS = {
    "heart cohort": ["heart", "cohort", "OUT", "--n", "1", "--size", "16", "--no-progress"],
    "heart correspond": ["heart", "correspond", "OUT", "--no-progress"],
    "heart train": ["heart", "train", "missing_cohort", "OUT", "--config", "tiny", "--no-progress"],
    "heart predict": ["heart", "predict", "missing_run", "missing.npz", "OUT"],
    "heart evaluate": ["heart", "evaluate", "missing_run", "missing_cohort", "OUT"],
    "sweep reconstruct": ["sweep", "reconstruct", "missing.seq.nrrd", "OUT", "--quiet"],
    "sweep compare": ["sweep", "compare", "missing.seq.nrrd", "OUT", "--quiet"],
    "sweep compound": ["sweep", "compound", "missing.seq.nrrd", "OUT.nii.gz"],
    "sweep render": ["sweep", "render", "missing.ply", "missing.seq.nrrd", "OUT.seq.nrrd"],
    "simulate sweep": ["simulate", "sweep", "missing_phantom", "OUT.seq.nrrd"],
    "phantom uterus": ["phantom", "uterus", "OUT"],
    "demo": ["demo", "--out", "OUT", "--quiet"],
    "heart fit-real": ["heart", "fit-real", "missing_beat", "OUT"],
    "report": ["report", "OUT"],
    "heart views": ["heart", "views", "OUT.npz", "--a4c", "missing.png"],
    "style train": ["style", "train", "missing.npz", "missing_cohort", "OUT", "--config", "tiny", "--no-progress"],
    "style apply": ["style", "apply", "missing_run", "missing.npz", "OUT.npz"],
}


@pytest.fixture(scope="module")
def busy(tmp_path_factory):
    """Each verb's output, locked by one holder process for the module."""
    root = tmp_path_factory.mktemp("busy")
    outputs = {}
    for verb, args in BUSY_VERBS.items():
        name = next(a for a in args if a.startswith("OUT"))
        out = root / verb.replace(" ", "_") / name
        out.parent.mkdir()
        if verb in ("heart correspond", "report"):  # they write into an existing folder
            out.mkdir()
        outputs[verb] = out
    holder = start_holder(*outputs.values())
    yield root, outputs, holder
    stop(holder)


@pytest.mark.parametrize("verb", list(BUSY_VERBS))
def test_second_writer_is_refused_at_once_naming_the_pid(busy, verb):
    root, outputs, holder = busy
    out = outputs[verb]
    args = [str(out) if a.startswith("OUT") else (str(out.parent / a) if "missing" in a else a)
            for a in BUSY_VERBS[verb]]
    t0 = time.perf_counter()
    res = runner.invoke(app, args)
    line = one_line_error(res, str(out), f"PID {holder.pid}")
    assert "being written by another process" in line
    assert time.perf_counter() - t0 < 60  # refused, not waited for
    left = sorted(p.name for p in out.parent.iterdir() if not p.name.endswith(LOCK_SUFFIX))
    assert left == (["OUT"] if verb in ("heart correspond", "report") else [])  # nothing written


def test_lock_of_a_killed_holder_is_taken_over(tmp_path):
    out = tmp_path / "cohort"
    holder = start_holder(out)
    res = runner.invoke(app, ["heart", "cohort", str(out), "--n", "1", "--size", "16", "--no-progress"])
    one_line_error(res, f"PID {holder.pid}")
    holder.kill()
    holder.wait(timeout=60)
    assert lock_path(out).exists()  # the dead holder's marker is still there ...
    res = runner.invoke(app, ["heart", "cohort", str(out), "--n", "1", "--size", "16", "--no-progress"])
    assert res.exit_code == 0, res.output  # ... and is taken over
    assert (out / "cases" / "00000" / "views.npz").is_file()
    no_leftovers(out)


def test_lock_is_reentrant_in_one_process_and_released(tmp_path):
    out = tmp_path / "o"
    with writer_lock(out) as held:
        assert held == out and lock_path(out).is_file()
        with writer_lock(out):  # a verb, then the library function it calls
            pass
        assert lock_path(out).is_file()
        holder = subprocess.run([sys.executable, "-c", HOLDER, str(out)], env=ENV, capture_output=True, text=True,
                                input="", timeout=120)
        assert holder.returncode != 0 and f"PID {os.getpid()}" in holder.stderr
    assert not lock_path(out).exists()
    with pytest.raises(BusyError):
        other = start_holder(out)
        try:
            with writer_lock(out):
                pass
        finally:
            stop(other)


def test_lock_in_a_read_only_folder_is_a_one_line_error(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as a user who can write anywhere")
        res = runner.invoke(app, ["heart", "cohort", str(ro / "c"), "--n", "1", "--size", "16", "--no-progress"])
        one_line_error(res, str(ro), "not writable")
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o755)


def test_stale_temporaries_are_cleared_by_the_next_writer(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "sub").mkdir()
    with atomic_path(out / "sub" / "a.nii.gz") as tmp:
        tmp.write_bytes(b"x")
    stale = out / "sub" / ".b.nii.gz.abcd1234.tmp.nii.gz"
    stale.write_bytes(b"half")
    keep = out / ".hidden_but_mine"
    keep.write_bytes(b"y")
    assert stale_temporaries(out) == [stale]
    with writer_lock(out):
        pass
    assert not stale.exists() and keep.exists() and (out / "sub" / "a.nii.gz").read_bytes() == b"x"


# --------------------------------------------------------------------------------------------
# Kill and resume
# --------------------------------------------------------------------------------------------

@contextlib.contextmanager
def one_thread():
    """Torch and numba on one thread in this process, as in the subprocesses (``ENV``), so that a run
    here and a run there compute the same bits."""
    torch_threads, numba_threads = torch.get_num_threads(), numba.get_num_threads()
    torch.set_num_threads(1)
    numba.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(torch_threads)
        numba.set_num_threads(numba_threads)


COHORT = ["heart", "cohort", "OUT", "--n", "3", "--size", "16", "--no-progress"]
GENERATE = "from sono3d.heart.cohort import generate_cohort; generate_cohort({out!r}, 3, size=16, workers={workers})"


@pytest.fixture(scope="module")
def reference_cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "cohort"
    generate_cohort(out, 3, size=16)
    return out


@pytest.mark.parametrize("kill_at", ["cohort-case:2", "atomic-rename:7", "random"])
def test_killed_cohort_resumes_to_the_same_bytes(reference_cohort, tmp_path, kill_at):
    out = tmp_path / "cohort"
    code = GENERATE.format(out=str(out), workers=1)
    if kill_at == "random":
        # An arbitrary moment: once the run holds its folder, after a random delay.
        proc = subprocess.Popen([sys.executable, "-c", code], env=ENV, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 300
        while not lock_path(out).exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(random.Random(os.getpid()).uniform(0.0, 1.0))
        proc.kill()
        proc.wait(timeout=60)
    else:
        assert_killed(run_python(code, kill_at))
        assert lock_path(out).exists()  # the dead run's lock, taken over by the rerun
    res = runner.invoke(app, [str(out) if a == "OUT" else a for a in COHORT])
    assert res.exit_code == 0, res.output
    assert files_of(out) == files_of(reference_cohort)
    no_leftovers(out)


@pytest.mark.slow
def test_a_killed_worker_fails_the_run_loudly_and_a_rerun_resumes(reference_cohort, tmp_path):
    """A worker process that dies (here: each at its first case) must not leave the parent waiting
    forever, as ``multiprocessing.Pool`` would: one error line, and the rerun completes."""
    out = tmp_path / "cohort"
    proc = run_python(f"from sono3d.cli import main; import sys; sys.argv = ['sono3d', 'heart', 'cohort', {str(out)!r}, "
                      "'--n', '3', '--size', '16', '--workers', '2', '--no-progress']; main()", "cohort-case:1")
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "worker process died" in lines[0] and "Traceback" not in proc.stderr, proc.stderr
    res = runner.invoke(app, [str(out) if a == "OUT" else a for a in COHORT])
    assert res.exit_code == 0, res.output
    assert files_of(out) == files_of(reference_cohort)
    no_leftovers(out)


def same_checkpoints(ref: Path, run: Path, epochs: int, loss: str) -> tuple[dict, dict]:
    """The two runs' checkpoints, asserted equal: ``epochs`` done, every weight bit for bit, the
    history's ``loss`` per epoch. Returns them for further checks."""
    a = torch.load(ref / "checkpoint.pt", weights_only=True)
    b = torch.load(run / "checkpoint.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == epochs
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert [h[loss] for h in a["history"]] == [h[loss] for h in b["history"]]
    return a, b


TRAIN = ["heart", "train", "COHORT", "RUN", "--config", "tiny", "--epochs", "3", "--max-cases", "3", "--seed", "4",
         "--no-progress"]


@pytest.mark.slow
def test_killed_training_resumes_to_the_same_weights(tmp_path):
    """Killed before its first checkpoint, resumed and killed again in the middle of its second
    epoch, resumed again: the weights and losses of an uninterrupted run, bit for bit."""
    cohort = tmp_path / "cohort"
    generate_cohort(cohort, 3, seed=1, size=32)
    ref, run = tmp_path / "ref", tmp_path / "run"
    with one_thread():
        res = runner.invoke(app, [str(cohort) if a == "COHORT" else str(ref) if a == "RUN" else a for a in TRAIN])
    assert res.exit_code == 0, res.output
    args = [str(cohort) if a == "COHORT" else str(run) if a == "RUN" else a for a in TRAIN]
    # 3 cases: 1 training case, 2 samples, one step per epoch
    code = f"import sys; from sono3d.cli import main; sys.argv = ['sono3d', *{args!r}, *sys.argv[1:]]; main()"
    proc = subprocess.run([sys.executable, "-c", code], env={**ENV, "SONO3D_TEST_KILL_AT": "train-step:1"},
                          capture_output=True, text=True, timeout=900)
    assert_killed(proc)
    assert not (run / "checkpoint.pt").exists() and (run / "train_log.json").is_file()
    proc = subprocess.run([sys.executable, "-c", code, "--resume"], env={**ENV, "SONO3D_TEST_KILL_AT": "train-step:2"},
                          capture_output=True, text=True, timeout=900)
    assert_killed(proc)
    assert torch.load(run / "checkpoint.pt", weights_only=True)["epoch"] == 1
    with one_thread():
        res = runner.invoke(app, [*args, "--resume"])
    assert res.exit_code == 0, res.output
    same_checkpoints(ref, run, 3, "train_loss")
    assert (ref / "split.json").read_bytes() == (run / "split.json").read_bytes()
    no_leftovers(run)


STYLE_TRAIN = ["style", "train", "REAL", "COHORT", "RUN", "--size", "32", "--config", "tiny", "--seed", "2",
               "--no-progress"]


@pytest.mark.slow
def test_killed_style_training_resumes_to_the_same_weights(tmp_path):
    """A CycleGAN run (tiny: 2 epochs of 2 steps) killed before its first checkpoint, resumed and
    killed in its second epoch, resumed again: the networks and image buffers of an uninterrupted run."""
    cohort = tmp_path / "cohort"
    generate_cohort(cohort, 3, seed=1, size=32)
    real = cohort / "cases" / "00002" / "views.npz"  # stands in for real frames

    def args(run: Path) -> list[str]:
        return [str(real) if a == "REAL" else str(cohort) if a == "COHORT" else str(run) if a == "RUN" else a
                for a in STYLE_TRAIN]

    ref, run = tmp_path / "ref", tmp_path / "run"
    with one_thread():
        res = runner.invoke(app, args(ref))
    assert res.exit_code == 0, res.output
    code = f"import sys; from sono3d.cli import main; sys.argv = ['sono3d', *{args(run)!r}, *sys.argv[1:]]; main()"
    assert_killed(subprocess.run([sys.executable, "-c", code], env={**ENV, "SONO3D_TEST_KILL_AT": "train-step:1"},
                                 capture_output=True, text=True, timeout=600))
    assert not (run / "checkpoint.pt").exists() and (run / "train_log.json").is_file()
    assert_killed(subprocess.run([sys.executable, "-c", code, "--resume"],
                                 env={**ENV, "SONO3D_TEST_KILL_AT": "train-step:3"}, capture_output=True, text=True,
                                 timeout=600))
    assert torch.load(run / "checkpoint.pt", weights_only=True)["epoch"] == 1
    with one_thread():
        res = runner.invoke(app, [*args(run), "--resume"])
    assert res.exit_code == 0, res.output
    a, b = same_checkpoints(ref, run, 2, "cycle")
    assert torch.equal(a["pool_x"], b["pool_x"]) and torch.equal(a["pool_y"], b["pool_y"])
    no_leftovers(run)


@pytest.mark.slow
def test_killed_correspondence_resumes_to_the_same_deformations(tmp_path):
    ref, part = tmp_path / "ref", tmp_path / "part"
    generate_cohort(ref, 2, seed=2, size=16)
    generate_cohort(part, 2, seed=2, size=16)
    args = ["heart", "correspond", "COHORT", "--blur", "2", "--no-progress"]
    with one_thread():
        res = runner.invoke(app, [str(ref) if a == "COHORT" else a for a in args])
    assert res.exit_code == 0, res.output
    code = ("from sono3d.heart.correspond import CorrespondOptions, correspond_cohort; "
            f"correspond_cohort({str(part)!r}, options=CorrespondOptions(blur_mm=2.0))")
    assert_killed(run_python(code, "correspond-case:1"))
    assert (part / "cases" / "00000" / "deformation.npz").is_file()
    assert not (part / "cases" / "00001" / "deformation.npz").exists()
    with one_thread():
        res = runner.invoke(app, [str(part) if a == "COHORT" else a for a in args])
    assert res.exit_code == 0, res.output
    for cid in ("00000", "00001"):
        a = (ref / "cases" / cid / "deformation.npz").read_bytes()
        assert a == (part / "cases" / cid / "deformation.npz").read_bytes(), cid
    rep = json.loads((part / "correspondence_report.json").read_text())
    assert rep["n_cases"] == 2 and rep["reused_cases"] == 1
    no_leftovers(part)


@pytest.mark.slow
def test_killed_reconstruction_reruns_to_the_same_result(tmp_path):
    sweep, _ = simulate_sweep(build_uterus(seed=1, mesh=False, spacing_mm=1.5), SweepConfig(frames=16, size_px=40))
    path = write_sweep(tmp_path / "s.seq.nrrd", sweep)
    args = ["sweep", "reconstruct", str(path), "OUT", "--preset", "small", "--epochs", "2", "--backend", "numba",
            "--quiet"]
    ref, out = tmp_path / "ref", tmp_path / "out"
    with one_thread():
        res = runner.invoke(app, [str(ref) if a == "OUT" else a for a in args])
    assert res.exit_code == 0, res.output
    killed = [str(out) if a == "OUT" else a for a in args]
    # killed while writing the volume: the Gaussians are in place, the volume only under a temporary name
    assert_killed(run_python(f"import sys; from sono3d.cli import main; sys.argv = ['sono3d', *{killed!r}]; main()",
                             "atomic-rename:2"))
    assert (out / "gaussians.ply").is_file() and not (out / "volume.nii.gz").exists()
    assert [p.name for p in out.iterdir() if ".tmp" in p.name]
    with one_thread():
        res = runner.invoke(app, killed)
    assert res.exit_code == 0, res.output
    assert (ref / "gaussians.ply").read_bytes() == (out / "gaussians.ply").read_bytes()
    assert np.array_equal(read_volume(ref / "volume.nii.gz").array, read_volume(out / "volume.nii.gz").array)
    a, b = (json.loads((d / "report.json").read_text()) for d in (ref, out))
    assert a["train"] == b["train"] and a["holdout"] == b["holdout"] and a["gaussians"] == b["gaussians"]
    no_leftovers(out)
