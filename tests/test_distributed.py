"""Two-process training on the CPU (gloo): the same gradients as one process, and ``torchrun`` of
``sono3d heart train`` following one process's loss trajectory (float64, to rounding)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from sono3d.heart.cohort import generate_cohort
from sono3d.heart.training import GlooBatchNorm, TrainConfig, train

from conftest import ROOT

ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
       "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                               torch.nn.Conv2d(4, 3, 3), torch.nn.BatchNorm2d(3)).double()


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return (torch.randn(5, 2, 9, 9, generator=g, dtype=torch.float64),
            torch.randn(5, 3, 5, 5, generator=g, dtype=torch.float64))


# Two steps of a global batch: 5 samples (ranks take 3 and 2), then 1 sample (rank 1 takes none).
_STEPS = ([0, 1, 2, 3, 4], [2])


def _one_process() -> dict[str, torch.Tensor]:
    model, (x, y) = _net(), _data()
    out = {}
    for s, step in enumerate(_STEPS):
        model.zero_grad()
        ((model(x[step]) - y[step]) ** 2).flatten(1).mean(1).mean().backward()
        out |= {f"{s}.{k}": p.grad.clone() for k, p in model.named_parameters()}
        if s == 0:  # the second step's single sample needs the first step's running statistics only
            out |= {f"{s}.{k}": b.clone() for k, b in model.named_buffers() if "running" in k}
    return out


def _worker(rank: int, world: int, port: int, path: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        model, (x, y) = GlooBatchNorm.convert(_net()), _data()
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        out = {}
        for s, step in enumerate(_STEPS):
            model.zero_grad()
            mine = step[rank::world]
            per = ((ddp(x[mine]) - y[mine]) ** 2).flatten(1).mean(1)
            (per.sum() * world / len(step)).backward()
            out |= {f"{s}.{k}": p.grad.clone() for k, p in model.named_parameters()}
            if s == 0:
                out |= {f"{s}.{k}": b.clone() for k, b in model.named_buffers() if "running" in k}
        if rank == 1:
            torch.save(out, path)
    finally:
        dist.destroy_process_group()


def test_gloo_batchnorm_gives_one_process_gradients_and_statistics(tmp_path):
    """float64: the only differences left are rounding (the first step splits 3 + 2, the second
    leaves rank 1 with no sample at all)."""
    ref = _one_process()
    path = tmp_path / "rank1.pt"
    mp.start_processes(_worker, args=(2, _free_port(), str(path)), nprocs=2, start_method="spawn")
    got = torch.load(path, weights_only=True)
    assert set(got) == set(ref)
    for key, value in ref.items():
        assert torch.allclose(got[key], value, rtol=1e-10, atol=1e-12), (key, (got[key] - value).abs().max())
    # and BatchNorm's state_dict keys do not change, so checkpoints load into a plain model
    assert set(GlooBatchNorm.convert(_net()).state_dict()) == set(_net().state_dict())


@pytest.mark.slow
def test_torchrun_two_processes_follow_one_process_loss_trajectory(tmp_path):
    """``torchrun --nproc_per_node 2`` of ``sono3d heart train`` (gloo, CPU) against one process with
    the same global batch: the training loss of each of two epochs agrees to float64 rounding.

    6 cases: a 4/1/1 split, 8 training samples, global batches of 4 (2 per process), 2 steps per
    epoch. In float64 (``--dtype float64``) the trajectories agree to ~1e-14 (asserted: 1e-9, far
    inside the issue's 1e-4). In float32 the same runs differ by 1.5e-7 after one epoch and 2.9e-4
    after two (measured 2026-11-30), and so does one float32 process from the float64 trajectory
    (3.1e-4): Adam's normalised first steps amplify float32 rounding, whatever the process count
    (``docs/s2mnet.md``).
    """
    cohort = tmp_path / "cohort"
    generate_cohort(cohort, 6, seed=3, size=64)
    args = ["heart", "train", str(cohort), "RUN", "--config", "tiny", "--epochs", "2", "--max-cases", "6",
            "--seed", "5", "--dtype", "float64", "--no-progress"]
    one = train(cohort, tmp_path / "one", "s2mnet",
                TrainConfig.preset("tiny", epochs=2, max_cases=6, dtype="float64"), seed=5)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "sono3d.cli", *[str(tmp_path / "two") if a == "RUN" else a for a in args]]
    proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = json.loads((tmp_path / "two" / "train_log.json").read_text())["history"]
    assert len(two) == len(one["history"]) == 2
    for a, b in zip(one["history"], two):
        assert abs(a["train_loss"] - b["train_loss"]) <= 1e-9, (a["train_loss"], b["train_loss"])
    assert two[1]["train_loss"] < two[0]["train_loss"]
    # rank 0 wrote the run alone: one split, one checkpoint that a single process reads
    ck = torch.load(tmp_path / "two" / "checkpoint.pt", weights_only=True)
    ref = torch.load(tmp_path / "one" / "checkpoint.pt", weights_only=True)
    assert ck["epoch"] == 2 and set(ck["model"]) == set(ref["model"])
    for key, value in ref["model"].items():
        assert torch.allclose(ck["model"][key].double(), value.double(), rtol=1e-7, atol=1e-9), key
