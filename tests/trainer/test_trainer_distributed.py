"""Several processes: the world from torchrun's environment, the gathered loss against one process, the
launcher's exit code, equal batches per rank, and a two-process run under torchrun (gloo) that publishes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as tdist
import torch.multiprocessing as mp
from trainer_helpers import keys, make_cfg, stdlib_pairs, tiny_spec, upload_pairs

from eft_api.contract import ExitCode, Reason, RunConfig, TerminationMessage
from eft_api.spec import Loss, TrainingSpec
from eft_devtools.local_s3 import LocalS3
from eft_trainer import distributed as dist
from eft_trainer.batching import fit_epoch
from eft_trainer.launch import exit_code_after
from eft_trainer.training import loss_kwargs

ROOT = Path(__file__).resolve().parents[2]


def test_world_comes_from_torchruns_environment() -> None:
    assert dist.from_env({}) == dist.World(0, 0, 1)
    w = dist.from_env({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"})
    assert (w.rank, w.local_rank, w.size, w.main, w.local_main, w.distributed) == (3, 1, 4, False, False, True)
    assert dist.from_env({"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}).main
    with pytest.raises(ValueError):
        dist.from_env({"WORLD_SIZE": "2", "RANK": "2"})


@pytest.mark.parametrize("loss", list(Loss))
def test_in_batch_negative_losses_gather_only_under_several_processes(loss: Loss) -> None:
    spec = TrainingSpec.model_validate({"loss": loss.value})
    in_batch = loss in {
        Loss.MULTIPLE_NEGATIVES_RANKING,
        Loss.CACHED_MULTIPLE_NEGATIVES_RANKING,
        Loss.MULTIPLE_NEGATIVES_SYMMETRIC_RANKING,
    }
    assert "gather_across_devices" not in loss_kwargs(spec, 1)
    assert loss_kwargs(spec, 2).get("gather_across_devices", False) is in_batch


def test_launcher_exits_with_the_trainers_code_not_torchruns() -> None:
    def msg(reason: Reason) -> str:
        return TerminationMessage(outcome="Failed", reason=reason, message="m", run_id="r").to_json()

    assert exit_code_after(0, None) == 0
    assert exit_code_after(1, msg(Reason.INVALID_CORPUS)) == ExitCode.BAD_INPUT
    assert exit_code_after(1, msg(Reason.PROMOTION_REJECTED)) == ExitCode.PROMOTION_REJECTED
    assert exit_code_after(1, None) == 1  # another node's pod: no termination message there
    assert exit_code_after(1, "not ours") == 1


def test_full_batches_when_distributed() -> None:
    candidates = [[[1, 2], [3, 4]], [[1, 2], [3, 4], [5, 6], [7, 8]]]
    assert fit_epoch(iter(candidates), 3, full=True) == [[1, 2], [3, 4], [5, 6]]
    assert fit_epoch(iter(candidates[:1]), 3, full=True) == [[1, 2], [3, 4], [1, 2]]
    assert fit_epoch(iter(candidates[:1]), 3) == [[1], [2], [3, 4]]  # one process: split, nothing repeated


# ---------------------------------------------------------------- the gathered loss, two processes (gloo)

BATCH, DIM = 4, 8


def _embeddings() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    return torch.randn(2 * BATCH, DIM, generator=g), torch.randn(2 * BATCH, DIM, generator=g)


def _loss(loss: Loss, world: int) -> Any:
    from eft_trainer.training import LOSS_CLASSES

    spec = TrainingSpec.model_validate({"loss": loss.value})
    from sentence_transformers.sentence_transformer import losses

    return getattr(losses, LOSS_CLASSES[loss])(torch.nn.Linear(1, 1), **loss_kwargs(spec, world))


def _rank(rank: int, port: int, loss: Loss, out: Any) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    tdist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        a, p = _embeddings()
        mine = slice(rank * BATCH, (rank + 1) * BATCH)
        qa, qp = a[mine].clone().requires_grad_(), p[mine].clone().requires_grad_()
        value = _loss(loss, 2).compute_loss_from_embeddings([qa, qp], None)
        value.backward()
        out.put((rank, float(value.detach()), qa.grad.tolist(), qp.grad.tolist()))  # plain data: no shared memory
        # Drop the autograd graph (it holds the gather's gloo work) and let the peer finish its collectives
        # before the group goes: tearing gloo down while the other rank still talks to it aborted the process
        # at exit once in CI ("terminate called without an active exception", exit -6) after correct results.
        del value, qa, qp
        tdist.barrier()
    finally:
        tdist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow  # two spawned processes import sentence-transformers: about a minute each on 2 cores
@pytest.mark.parametrize("loss", [Loss.MULTIPLE_NEGATIVES_RANKING, Loss.MULTIPLE_NEGATIVES_SYMMETRIC_RANKING])
def test_gathered_loss_equals_one_process_on_the_whole_batch(loss: Loss) -> None:
    """Each of two ranks holds half the batch; with gather_across_devices the mean of their losses is the
    one-process loss on the whole batch, and each rank's gradient (which DDP then averages) is world times
    the one-process gradient of its rows: every rank's anchors saw all 2 * BATCH candidates."""
    a, p = _embeddings()
    qa, qp = a.clone().requires_grad_(), p.clone().requires_grad_()
    single = _loss(loss, 1).compute_loss_from_embeddings([qa, qp], None)
    single.backward()
    assert qa.grad is not None and qp.grad is not None

    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_rank, args=(r, port, loss, out)) for r in range(2)]
    for pr in procs:
        pr.start()
    results = sorted(out.get(timeout=120) for _ in procs)
    for pr in procs:
        pr.join(timeout=60)
        assert pr.exitcode == 0
    mean = sum(r[1] for r in results) / 2
    assert mean == pytest.approx(float(single), rel=1e-5)
    for rank, _, ga, gp in results:
        mine = slice(rank * BATCH, (rank + 1) * BATCH)
        torch.testing.assert_close(torch.tensor(ga), 2 * qa.grad[mine], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(torch.tensor(gp), 2 * qp.grad[mine], rtol=1e-4, atol=1e-6)
    # Without the gather each rank only sees its own half: the loss differs (the test can fail).
    local = [float(_loss(loss, 1).compute_loss_from_embeddings([a[s], p[s]], None)) for s in (slice(0, 4), slice(4, 8))]
    assert sum(local) / 2 != pytest.approx(float(single), rel=1e-3)


# ---------------------------------------------------------------- two processes under torchrun, published


def _torchrun(
    cfg: RunConfig, s3: LocalS3, pod: Path, worker: list[str], extra: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """``eft-trainer torchrun --nproc_per_node=2`` as the Job's container runs it, in the work dir ``pod``."""
    cfg = cfg.model_copy(update={"settings": cfg.settings.model_copy(update={"work_dir": str(pod)})})
    pod.mkdir(parents=True)
    run_config = pod / "run-config.json"
    run_config.write_text(cfg.to_json())
    term = pod / "termination-log"
    env = {
        **os.environ,
        **s3.env(),
        "EFT_RUN_CONFIG": str(run_config),
        "EFT_TERMINATION_LOG": str(term),
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join(str(ROOT / p) for p in ("operator", "trainer_image", "tests/trainer")),
        **(extra or {}),
    }
    cmd = [sys.executable, "-m", "eft_trainer", "torchrun", "--nproc_per_node=2", "--standalone", "--max_restarts=0"]
    return subprocess.run([*cmd, *worker], env=env, capture_output=True, text=True, timeout=600), term


@pytest.mark.slow
def test_two_processes_under_torchrun_publish_one_run(
    s3_server: LocalS3, s3_bucket: str, tmp_path: Path, model_dir: Path
) -> None:
    upload_pairs(s3_server, s3_bucket, stdlib_pairs(200))
    spec = tiny_spec(s3_bucket, s3_server.endpoint, checkpointSteps=10)
    cfg = make_cfg(spec, tmp_path / "pod", model_dir, name="ddp")
    proc, term = _torchrun(cfg, s3_server, tmp_path / "pod", ["--module", "eft_trainer"])
    assert proc.returncode == 0, proc.stderr[-4000:]
    msg = TerminationMessage.parse(term.read_text())
    assert msg is not None and msg.outcome == "Succeeded" and msg.headline is not None, term.read_text()
    assert proc.stderr.count("run " + cfg.run.run_id + " finished: Succeeded") == 2  # both ranks ended
    assert "joined the process group as rank 1 of 2" in proc.stderr

    prefix = cfg.run.output_prefix.split("/", 3)[3]
    published = keys(s3_server, s3_bucket, prefix)
    manifest = json.loads(s3_server.client().get_object(Bucket=s3_bucket, Key=prefix + "manifest.json")["Body"].read())
    listed = {o["key"] if isinstance(o, dict) and "key" in o else o for o in manifest.get("objects", manifest)}
    assert any("model/" in str(k) for k in listed)
    assert prefix + "report.json" in published and prefix + "model/config.json" in published
    rep = json.loads(s3_server.client().get_object(Bucket=s3_bucket, Key=prefix + "report.json")["Body"].read())
    assert rep["hardware"]["processes"] == 2
    # Each step trains a full batch on each rank: twice the rows of one process per step.
    assert rep["training"]["samples"] == rep["training"]["steps"] * 8 * 2
    assert prefix + "checkpoints/latest.json" in published  # rank 0 mirrored the checkpoints (once each)


@pytest.mark.slow
def test_a_rank_killed_mid_run_fails_the_attempt_and_the_retry_resumes(
    s3_server: LocalS3, s3_bucket: str, tmp_path: Path, model_dir: Path
) -> None:
    """Rank 1 is SIGKILLed at step 12, after the checkpoint of step 10 was mirrored: the attempt fails
    (torchrun stops rank 0; nothing is published), and a fresh pod resumes both ranks from step 10."""
    upload_pairs(s3_server, s3_bucket, stdlib_pairs(300))
    spec = tiny_spec(s3_bucket, s3_server.endpoint, checkpointSteps=10)
    cfg = make_cfg(spec, tmp_path / "pod1", model_dir, name="killed")
    worker = [str(ROOT / "tests" / "trainer" / "kill_rank.py")]
    proc, _ = _torchrun(
        cfg, s3_server, tmp_path / "pod1", worker, {"EFT_TEST_KILL_RANK": "1", "EFT_TEST_KILL_STEP": "12"}
    )
    assert proc.returncode not in (0, *[int(c) for c in (ExitCode.BAD_INPUT, ExitCode.PROMOTION_REJECTED)])
    prefix = cfg.run.output_prefix.split("/", 3)[3]
    assert prefix + "manifest.json" not in keys(s3_server, s3_bucket, prefix), "a failed attempt published"
    marker = s3_server.client().get_object(Bucket=s3_bucket, Key=prefix + "checkpoints/latest.json")["Body"].read()
    assert json.loads(marker) == {"checkpoint": "checkpoint-10"}

    proc, _ = _torchrun(cfg, s3_server, tmp_path / "pod2", ["--module", "eft_trainer"])
    assert proc.returncode == 0, proc.stderr[-4000:]
    rep = json.loads(s3_server.client().get_object(Bucket=s3_bucket, Key=prefix + "report.json")["Body"].read())
    assert rep["training"]["resumedFromStep"] == 10
    assert rep["training"]["steps"] > 12
    assert keys(s3_server, s3_bucket, prefix).count(prefix + "manifest.json") == 1
