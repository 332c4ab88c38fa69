"""Out-of-memory recovery (eft_trainer.oom): the decision by tables, the marker's lifecycle, and a real run
under a memory limit that the plain loss exceeds and its cached variant fits."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from trainer_helpers import env, keys, make_cfg, s3_json, spec_dict, stdlib_pairs, tiny_spec, upload_pairs
from transformers import TrainerCallback

from eft_api.contract import ExitCode, Reason, TerminationMessage
from eft_api.report import Report
from eft_cli.run import run_config
from eft_devtools.local_s3 import LocalS3

HERE = Path(__file__).parent
#: The child's address-space limit: between the peak virtual size of the plain loss at batch 32 of
#: 128-token positives and that of its cached variant at mini-batch 8 (calibrated on this machine; see README).
LIMIT = int(os.environ.get("EFT_TEST_OOM_LIMIT", str(3400 * 2**20)))


def long_pairs(n: int) -> list[dict[str, str]]:
    """Short questions, long answers (several docstring paragraphs each, over 128 tokens): memory grows with
    the padded length of the positives."""
    base = stdlib_pairs(n + 12)
    return [
        {"question": base[i]["question"], "answer": " ".join(base[(i + j) % len(base)]["answer"] for j in range(8))}
        for i in range(n)
    ]


def child(cfg_path: Path, s3: LocalS3, limit: int, max_steps: int = 1) -> subprocess.CompletedProcess[str]:
    environ = {
        **os.environ,
        **s3.env(),
        "PYTHONPATH": os.pathsep.join([str(HERE), *sys.path]),
        "OMP_NUM_THREADS": "1",
        "MALLOC_ARENA_MAX": "2",
        "HF_HUB_OFFLINE": "1",
    }
    cmd = [sys.executable, str(HERE / "oom_child.py"), str(cfg_path), str(limit), str(max_steps)]
    return subprocess.run(cmd, env=environ, capture_output=True, text=True, timeout=900)


# ---------------------------------------------------------------- the decision (pure)

MNR, CMNR, MNSR = "MultipleNegativesRanking", "CachedMultipleNegativesRanking", "MultipleNegativesSymmetricRanking"
CMNSR = "CachedMultipleNegativesSymmetricRanking"


def training(**kw: Any) -> Any:
    from eft_api.spec import TrainingSpec

    return TrainingSpec.model_validate(kw)


def ooms(n: int) -> list[Any]:
    from eft_trainer.oom import EXCEPTION, OomRecord, Setup

    return [OomRecord(i + 1, Setup(MNR, 32), 1, EXCEPTION) for i in range(n)]


@pytest.mark.parametrize(
    ("spec", "failures", "loss", "mini"),
    [
        ({}, 0, MNR, None),  # no failure: the spec's loss
        ({"batchSize": 64}, 1, CMNR, 16),  # min(miniBatchSize 32, 64 // 4)
        ({"batchSize": 64}, 2, CMNR, 8),  # halved at each further failure
        ({"batchSize": 64}, 5, CMNR, 1),  # down to the floor
        ({"batchSize": 64}, 6, None, None),  # below it: nothing left
        ({"batchSize": 256, "miniBatchSize": 16}, 1, CMNR, 16),  # the spec's smaller miniBatchSize first
        ({"loss": MNSR, "batchSize": 32}, 1, CMNSR, 8),  # the symmetric loss has its cached variant
        ({"loss": CMNR, "batchSize": 512, "miniBatchSize": 64}, 1, CMNR, 32),  # cached already: half its mini-batch
        ({"loss": CMNR, "miniBatchSize": 1}, 1, None, None),
        ({"batchSize": 2}, 1, None, None),  # 2 // 4 = 0: too small to split
        ({"loss": "Triplet"}, 0, "Triplet", None),
        ({"loss": "Triplet"}, 1, None, None),  # no cached variant: no fallback
        ({"method": "queryAdapter"}, 1, None, None),  # trains on cached embeddings already
        ({"method": "queryEncoder", "batchSize": 64}, 1, CMNR, 16),  # its query tower: GradCache on the queries
    ],
)
def test_the_plan_after_out_of_memory_failures(spec: dict[str, Any], failures: int, loss: str, mini: int) -> None:
    from eft_trainer.oom import plan

    p = plan(training(**spec), ooms(failures))
    if loss is None:
        assert p is None
        return
    assert p is not None and p.setup.loss == loss and p.cached_mini_batch == mini
    assert p.setup.batch_size == training(**spec).batch_size  # the effective batch never changes


@pytest.mark.parametrize(
    ("exc", "oom"),
    [
        (MemoryError(), True),
        (RuntimeError("[enforce fail at alloc_cpu.cpp:119] DefaultCPUAllocator: can't allocate memory"), True),
        (RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), True),
        (RuntimeError("shape mismatch"), False),
        (ValueError("can't allocate memory"), False),  # only the allocator's RuntimeError
    ],
)
def test_what_counts_as_out_of_memory(exc: BaseException, oom: bool) -> None:
    from eft_trainer.oom import is_oom

    assert is_oom(exc) is oom


def test_torch_out_of_memory_errors_count() -> None:
    import torch

    from eft_trainer.oom import is_oom

    assert is_oom(torch.OutOfMemoryError("CUDA out of memory"))


def test_a_planned_fallback_makes_the_attempt_retryable() -> None:
    """Exit code 5 is not in the podFailurePolicy's FailJob list: the Job retries; with no fallback left, 4 fails it."""
    from eft_api.contract import NON_RETRYABLE_EXIT_CODES, OomFallback
    from eft_trainer.errors import OutOfMemory
    from eft_trainer.stages.outcome import exit_code, failure

    fb = OomFallback(from_loss=MNR, to_loss=CMNR, mini_batch_size=8, attempt=2)
    retry = failure(OutOfMemory("out of memory", fb), "r")
    assert retry.reason == Reason.OOM and retry.oom_fallback == fb
    assert exit_code(retry) == ExitCode.OUT_OF_MEMORY_FALLBACK not in NON_RETRYABLE_EXIT_CODES
    assert exit_code(failure(OutOfMemory("out of memory"), "r")) == ExitCode.OUT_OF_MEMORY in NON_RETRYABLE_EXIT_CODES
    assert TerminationMessage.parse(retry.to_json()) == retry


def test_the_marker_over_attempts(tmp_path: Path) -> None:
    """Caught failures and an attempt that vanished mid-training (a kernel OOM kill) both step the plan down."""
    from eft_trainer.oom import UNCLEAN_EXIT, Attempts, Guard, LocalMarker

    store = LocalMarker(tmp_path / "oom.json")
    spec = training(batchSize=64)
    first = Guard(store, spec)
    p = first.start()
    assert p is not None and not p.fallback and first.attempt == 1
    assert Attempts.from_json(store.read() or b"").in_progress == p.setup  # training now
    nxt = first.failed(3, MemoryError())
    assert nxt is not None and nxt.cached_mini_batch == 16
    assert Attempts.from_json(store.read() or b"").in_progress is None

    second = Guard(store, spec)
    p2 = second.start()
    assert p2 is not None and p2.cached_mini_batch == 16 and second.attempt == 2
    # ... killed here without a word: inProgress stays set.
    third = Guard(store, spec)
    p3 = third.start()
    assert p3 is not None and p3.cached_mini_batch == 8 and third.attempt == 3
    state = Attempts.from_json(store.read() or b"")
    assert [r.detected for r in state.out_of_memory] == ["exception", UNCLEAN_EXIT]
    assert state.out_of_memory[0].step == 3 and state.out_of_memory[1].setup == p2.setup
    third.ended()
    assert Attempts.from_json(store.read() or b"").in_progress is None
    summary = third.summary()
    assert summary is not None
    assert (summary["fromLoss"], summary["toLoss"], summary["miniBatchSize"], summary["attempt"]) == (MNR, CMNR, 8, 3)
    assert len(summary["outOfMemory"]) == 2
    assert Guard(LocalMarker(tmp_path / "none.json"), spec).start() == first.plan  # no marker: the spec


# ---------------------------------------------------------------- real runs


def _marker(s3: LocalS3, bucket: str, prefix: str) -> dict[str, Any]:
    data: dict[str, Any] = s3_json(s3, bucket, prefix + "checkpoints/oom.json")
    return data


@pytest.mark.slow
def test_out_of_memory_with_the_plain_loss_then_the_retry_publishes_with_the_cached_one(
    s3_server: LocalS3, s3_bucket: str, tmp_path: Path, model_dir: Path
) -> None:
    """A real allocator failure: the child's address space is limited (RLIMIT_AS) between what MNRL at batch 32
    of 128-token positives needs and what its cached variant at mini-batch 8 needs. One step each."""
    upload_pairs(s3_server, s3_bucket, long_pairs(38))  # 32 training rows: one full batch
    spec = spec_dict(s3_bucket, s3_server.endpoint, batchSize=32)
    spec["model"]["maxSeqLength"] = 128

    def attempt(pod: str) -> tuple[subprocess.CompletedProcess[str], TerminationMessage | None, str]:
        """A retried pod: the same config, a fresh work folder."""
        cfg = make_cfg(spec, tmp_path / pod, model_dir, name="oom")
        path = tmp_path / f"{pod}.json"
        path.write_text(cfg.to_json())
        proc = child(path, s3_server, LIMIT)
        term = tmp_path / pod / f"{cfg.run.run_id}-termination-log"
        return proc, TerminationMessage.parse(term.read_text() if term.exists() else None), cfg.run.output_prefix

    p1, m1, uri = attempt("pod1")
    prefix = uri.split("/", 3)[3]
    assert p1.returncode == ExitCode.OUT_OF_MEMORY_FALLBACK, p1.stderr[-4000:]
    assert prefix + "manifest.json" not in keys(s3_server, s3_bucket, prefix)
    assert m1 is not None and m1.reason == Reason.OOM and "CachedMultipleNegativesRanking" in m1.message, m1
    assert m1.oom_fallback is not None and (m1.oom_fallback.to_loss, m1.oom_fallback.mini_batch_size) == (CMNR, 8)
    [record] = _marker(s3_server, s3_bucket, prefix)["outOfMemory"]
    assert record["setup"] == {"loss": MNR, "batchSize": 32, "miniBatchSize": None}
    assert record["detected"] == "exception" and record["step"] == 1
    assert "allocate memory" in record["error"] or "MemoryError" in record["error"], record

    p2, m2, _ = attempt("pod2")
    assert p2.returncode == ExitCode.SUCCEEDED, p2.stderr[-4000:]
    assert m2 is not None and m2.oom_fallback == m1.oom_fallback and "out of memory before" in m2.message
    report = s3_json(s3_server, s3_bucket, prefix + "report.json")
    fb = report["training"]["oomFallback"]
    assert (fb["fromLoss"], fb["toLoss"], fb["batchSize"], fb["miniBatchSize"], fb["attempt"]) == (MNR, CMNR, 32, 8, 2)
    assert report["training"]["steps"] == 1 and report["training"]["samples"] == 32
    assert _marker(s3_server, s3_bucket, prefix)["inProgress"] is None


class OutOfMemoryAt(TrainerCallback):  # type: ignore[misc]
    """The allocator's failure at the end of a step (as the CUDA caching allocator raises it)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if state.global_step == self.step:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


@pytest.mark.slow
def test_the_cached_loss_resumes_from_the_plain_losss_checkpoint(
    s3_server: LocalS3, s3_bucket: str, tmp_path: Path, model_dir: Path
) -> None:
    """Out of memory at step 12, after the checkpoint of step 10 was mirrored: the retry resumes from step 10 with
    the cached loss (same weights, optimizer and scheduler state, same batches) and publishes once."""
    upload_pairs(s3_server, s3_bucket, stdlib_pairs(130))
    spec = tiny_spec(s3_bucket, s3_server.endpoint)  # batch 8: the fallback's mini-batch is 8 // 4 = 2
    cfg = make_cfg(spec, tmp_path / "pod1", model_dir, name="oom-resume")
    prefix = cfg.run.output_prefix.split("/", 3)[3]
    with env(s3_server.env()):
        code, msg = run_config(cfg, callbacks=[OutOfMemoryAt(12)])
    assert code == ExitCode.OUT_OF_MEMORY_FALLBACK and msg is not None and msg.oom_fallback is not None, msg
    assert "at step 12" in msg.message and msg.oom_fallback.mini_batch_size == 2
    cfg2 = make_cfg(spec, tmp_path / "pod2", model_dir, name="oom-resume")
    with env(s3_server.env()):
        code2, msg2 = run_config(cfg2)
    assert code2 == ExitCode.SUCCEEDED and msg2 is not None and msg2.oom_fallback == msg.oom_fallback, msg2
    report = s3_json(s3_server, s3_bucket, prefix + "report.json")
    assert report["training"]["resumedFromStep"] == 10 and report["training"]["steps"] > 12
    assert report["training"]["oomFallback"]["outOfMemory"][0]["step"] == 12
    assert keys(s3_server, s3_bucket, prefix).count(prefix + "manifest.json") == 1


def test_the_human_report_says_why_the_loss_changed(tmp_path: Path) -> None:
    from eft_trainer.oom import Guard, LocalMarker
    from eft_trainer.report import build_report, paired_bootstrap, render_markdown

    spec = training(batchSize=64)
    Guard(LocalMarker(tmp_path / "oom.json"), spec).start()
    Guard(LocalMarker(tmp_path / "oom.json"), spec).start()  # the first vanished: the second falls back
    guard = Guard(LocalMarker(tmp_path / "oom.json"), spec)
    guard.start()
    rep = build_report(
        config={"name": "x", "baseModel": "m", "loss": MNR},
        data={"trainRows": 10},
        base={384: {"ndcg@10": 0.5}},
        tuned={384: {"ndcg@10": 0.6}},
        primary_metric="ndcg@10",
        primary_dim=384,
        bootstrap=paired_bootstrap([0.5], [0.6]),
        timings={"train": 1.0},
        training={"steps": 3, "oomFallback": guard.summary()},
        hardware={"cpus": 2},
    )
    md = render_markdown(Report.model_validate(rep))
    assert (
        "- out of memory before: attempt 3 trained with CachedMultipleNegativesRanking (mini-batch 8, batch 64) "
        "instead of MultipleNegativesRanking, after 2 out-of-memory failure(s)"
    ) in md
    assert "{'" not in md


@pytest.mark.slow
@pytest.mark.parametrize("loss", [MNR, MNSR])
def test_the_cached_variant_gives_the_same_loss_and_gradients(loss: str, model_dir: Path) -> None:
    """Why switching is safe: on one batch the cached variant (mini-batch 2) computes the plain loss's value and
    gradients (dropout off, so both see the same embeddings), Matryoshka included."""
    from sentence_transformers import SentenceTransformer
    from trainer_helpers import HUB_ID

    from eft_trainer.training import build_loss

    model = SentenceTransformer(str(model_dir / HUB_ID))
    model.eval()
    pairs = stdlib_pairs(8)
    feats = [model.tokenize([p["question"] for p in pairs]), model.tokenize([p["answer"] for p in pairs])]
    spec = training(loss=loss, batchSize=8, matryoshkaDims=[384, 128])
    results = []
    for mini in (None, 2):
        model.zero_grad()
        value = build_loss(model, spec, cached_mini_batch=mini)(feats, None)
        value.backward()
        grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
        results.append((float(value.detach()), grads))
    (plain, g_plain), (cached, g_cached) = results
    assert cached == pytest.approx(plain, rel=1e-5)
    assert len(g_cached) == len(g_plain) > 0
    for a, b in zip(g_plain, g_cached, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)
