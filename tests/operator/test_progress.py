"""Table tests of the pure progress computation (eft_operator.progress), fed by the trainer's real gauges."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import generate_latest

from eft_api.contract import TRAINER_PHASES as PHASES
from eft_api.status import TrainerStatus
from eft_operator.config import Settings, SettingsError
from eft_operator.progress import (
    PHASE_START,
    Sample,
    finished,
    metrics_url,
    parse_metrics,
    phase_name,
    progress_percentage,
    same_progress,
    trainer_status,
)
from eft_operator.status import SUCCEEDED, Observation, compute_status
from eft_trainer.metrics import Progress

NOW = "2026-12-01T10:00:00Z"
LATER = "2026-12-01T10:00:05Z"


@pytest.mark.parametrize(
    ("phase", "step", "max_steps", "previous", "expected"),
    [
        ("fetch", None, None, None, 0),
        ("generate", None, None, None, 2),
        ("check", None, None, None, 10),
        ("evaluate-base", None, None, None, 12),
        ("mine", None, None, None, 16),
        ("label", None, None, None, 18),
        ("pretrain", None, None, None, 20),
        ("train", 0, 100, None, 25),
        ("train", 50, 100, None, 57),  # 25 + 0.5 * 65, rounded down
        ("train", 100, 100, None, 90),
        ("train", 120, 100, None, 90),  # a step past max_steps never passes the next phase's start
        ("train", None, None, None, 25),  # max_steps not known yet: the phase's start
        ("train", 5, 0, None, 25),
        ("evaluate-finetuned", None, None, None, 90),
        ("evaluate-teacher", None, None, None, 94),
        ("publish", None, None, None, 96),
        ("done", None, None, None, 100),
        # A phase without a weight (failed, or one a later trainer adds) keeps the previous percentage.
        ("failed", None, None, 57, 57),
        ("distill", None, None, 40, 40),
        ("distill", None, None, None, None),
        (None, None, None, 12, 12),
    ],
)
def test_progress_percentage(
    phase: str | None, step: float | None, max_steps: float | None, previous: int | None, expected: int | None
) -> None:
    assert progress_percentage(phase, step, max_steps, previous) == expected


def test_phase_weights_follow_the_run_order_and_cover_every_trainer_phase() -> None:
    starts = [PHASE_START[p] for p in PHASES if p in PHASE_START]
    assert starts == sorted(starts) and starts[0] == 0 and starts[-1] == 100
    assert set(PHASES) - set(PHASE_START) == {"failed"}


@pytest.mark.parametrize(
    ("phase", "name"),
    [
        ("fetch", "Loading"),
        ("check", "Loading"),
        ("generate", "Generating"),
        ("evaluate-base", "EvaluatingBase"),
        ("train", "Training"),
        ("evaluate-finetuned", "Evaluating"),
        ("publish", "Publishing"),
        ("done", "Done"),
        ("failed", "Failed"),
        ("distill-teacher", "DistillTeacher"),
        ("--", "Unknown"),
    ],
)
def test_phase_name(phase: str, name: str) -> None:
    assert phase_name(phase) == name


def gauges(phase: str | None = None, **values: float) -> str:
    """The exposition text the trainer's real registry serves."""
    prog = Progress(0)
    prog.record_eval("base", {384: {"ndcg@10": 0.5}})  # served too, skipped by the parser
    if phase is not None:
        prog.set_phase(phase)
    for attr, value in values.items():
        getattr(prog, attr).set(value)
    return generate_latest(prog.registry).decode()


def test_parse_metrics_reads_the_trainers_gauges() -> None:
    text = gauges("train", step=40, max_steps=80, epoch=0.5, loss=0.75, sps=12.5, eta=33.2)
    assert parse_metrics(text) == Sample(
        phase="train", step=40, max_steps=80, epoch=0.5, loss=0.75, samples_per_second=12.5, eta_seconds=33.2
    )


def test_parse_metrics_before_training_has_no_loss_throughput_or_eta() -> None:
    sample = parse_metrics(gauges("evaluate-base"))
    assert sample.phase == "evaluate-base" and sample.step == 0 and sample.max_steps == 0
    assert sample.loss is None and sample.samples_per_second is None and sample.eta_seconds is None


def test_a_phase_the_trainer_does_not_list_is_still_served() -> None:
    prog = Progress(0)
    prog.set_phase("distill")
    prog.set_phase("train")
    assert parse_metrics(generate_latest(prog.registry).decode()).phase == "train"
    prog.set_phase("distill")
    assert parse_metrics(generate_latest(prog.registry).decode()).phase == "distill"


@pytest.mark.parametrize("text", ["", "# nothing here\n", "other_metric 1\n"])
def test_parse_metrics_of_something_else_is_empty(text: str) -> None:
    assert parse_metrics(text) == Sample()


def test_parse_metrics_of_garbage_raises_value_error() -> None:
    with pytest.raises(ValueError):
        parse_metrics("eft_trainer_step{ 1 2 3\n")


def figures(**values: str) -> list[dict[str, str]]:
    return [{"name": k, "value": v} for k, v in values.items()]


@pytest.mark.parametrize(
    ("sample", "previous", "expected"),
    [
        (
            Sample(phase="fetch", step=0, max_steps=0),
            None,
            {"phase": "Loading", "progressPercentage": 0, "lastUpdatedTime": NOW},
        ),
        (
            Sample(
                phase="train", step=25, max_steps=100, epoch=0.25, loss=1.5, samples_per_second=11.2, eta_seconds=9.1
            ),
            None,
            {
                "phase": "Training",
                "progressPercentage": 41,
                "estimatedRemainingSeconds": 10,
                "metrics": figures(loss="1.5", samplesPerSecond="11.2", step="25", maxSteps="100", epoch="0.25"),
                "lastUpdatedTime": NOW,
            },
        ),
        (  # after training: the last training figures stay, the estimate goes
            Sample(phase="publish", step=100, max_steps=100, epoch=1, loss=0.4, samples_per_second=11, eta_seconds=0),
            None,
            {
                "phase": "Publishing",
                "progressPercentage": 96,
                "metrics": figures(loss="0.4", samplesPerSecond="11", step="100", maxSteps="100", epoch="1"),
                "lastUpdatedTime": NOW,
            },
        ),
        (  # an unknown phase keeps the percentage last written
            Sample(phase="distill", step=0, max_steps=0),
            {"phase": "EvaluatingBase", "progressPercentage": 12, "lastUpdatedTime": NOW},
            {"phase": "Distill", "progressPercentage": 12, "lastUpdatedTime": LATER},
        ),
    ],
)
def test_trainer_status(sample: Sample, previous: dict[str, Any] | None, expected: dict[str, Any]) -> None:
    got = trainer_status(sample, LATER if previous else NOW, previous)
    assert got == expected
    assert TrainerStatus.model_validate(got).to_status() == got


def test_same_progress_ignores_only_the_time() -> None:
    a = {"phase": "Training", "progressPercentage": 30, "lastUpdatedTime": NOW}
    assert same_progress(a, {**a, "lastUpdatedTime": LATER})
    assert not same_progress(a, {**a, "progressPercentage": 31})
    assert not same_progress(a, None)


@pytest.mark.parametrize(
    ("previous", "succeeded", "expected"),
    [
        (
            {"phase": "Publishing", "progressPercentage": 96, "metrics": [{"name": "step", "value": "9"}]},
            True,
            {
                "phase": "Done",
                "progressPercentage": 100,
                "estimatedRemainingSeconds": 0,
                "metrics": [{"name": "step", "value": "9"}],
                "lastUpdatedTime": LATER,
            },
        ),
        (
            None,
            True,
            {"phase": "Done", "progressPercentage": 100, "estimatedRemainingSeconds": 0, "lastUpdatedTime": LATER},
        ),
        (  # a failed run keeps the last value
            {"phase": "Training", "progressPercentage": 40, "lastUpdatedTime": NOW},
            False,
            {"phase": "Training", "progressPercentage": 40, "lastUpdatedTime": NOW},
        ),
        (None, False, None),
    ],
)
def test_finished(previous: dict[str, Any] | None, succeeded: bool, expected: dict[str, Any] | None) -> None:
    assert finished(previous, succeeded, LATER) == expected


def test_a_succeeded_run_says_100_and_a_new_run_drops_the_old_progress() -> None:
    run = {"id": "r1", "generation": 1, "jobName": "j", "phase": "Running", "reason": "Running"}
    prev = {"currentRun": run, "trainerStatus": {"phase": "Publishing", "progressPercentage": 96}}
    status, _ = compute_status(prev, generation=1, run=run, observation=Observation(SUCCEEDED, SUCCEEDED), now=NOW)
    assert status["trainerStatus"]["progressPercentage"] == 100 and status["trainerStatus"]["phase"] == "Done"
    new_run = {"id": "r2", "generation": 2, "jobName": "j2"}
    status, _ = compute_status(
        status, generation=2, run=new_run, observation=Observation("Pending", "JobCreated"), now=LATER
    )
    assert "trainerStatus" not in status


def pod(
    name: str, ip: str | None, port: int | None, *, running: bool = True, index: str | None = None
) -> dict[str, Any]:
    ports = [{"name": "metrics", "containerPort": port}] if port else []
    ann = {"batch.kubernetes.io/job-completion-index": index} if index is not None else {}
    state = {"running": {}} if running else {"waiting": {"reason": "ContainerCreating"}}
    return {
        "metadata": {"name": name, "annotations": ann},
        "spec": {"containers": [{"name": "trainer", "ports": [{"name": "other", "containerPort": 1}, *ports]}]},
        "status": {"podIP": ip, "containerStatuses": [{"name": "trainer", "state": state}]},
    }


@pytest.mark.parametrize(
    ("pods", "url"),
    [
        ([pod("a", "10.1.2.3", 9090)], "http://10.1.2.3:9090/metrics"),
        ([pod("a", "fd00::5", 9091)], "http://[fd00::5]:9091/metrics"),
        ([pod("a", None, 9090)], None),  # no IP yet
        ([pod("a", "10.1.2.3", None)], None),  # no port named metrics
        ([pod("a", "10.1.2.3", 9090, running=False)], None),
        ([], None),
        # A multi-node run: the first node's pod (completion index 0) serves the run's gauges.
        (
            [pod("b", "10.0.0.2", 9090, index="1"), pod("a", "10.0.0.1", 9090, index="0")],
            "http://10.0.0.1:9090/metrics",
        ),
        (
            [pod("b", "10.0.0.2", 9090, index="1"), pod("a", "10.0.0.1", 9090, running=False, index="0")],
            "http://10.0.0.2:9090/metrics",
        ),
    ],
)
def test_metrics_url(pods: list[dict[str, Any]], url: str | None) -> None:
    assert metrics_url(pods) == url


@pytest.mark.parametrize(("raw", "seconds"), [(None, 10.0), ("2.5", 2.5), ("0", 0.0), ("3600", 3600.0)])
def test_the_progress_interval_setting(raw: str | None, seconds: float) -> None:
    env = {} if raw is None else {"EFT_PROGRESS_INTERVAL": raw}
    assert Settings.from_env(env).progress_interval == seconds


@pytest.mark.parametrize("raw", ["-1", "soon", "3601", "nan"])
def test_a_bad_progress_interval_names_the_variable(raw: str) -> None:
    with pytest.raises(SettingsError, match="EFT_PROGRESS_INTERVAL"):
        Settings.from_env({"EFT_PROGRESS_INTERVAL": raw})
