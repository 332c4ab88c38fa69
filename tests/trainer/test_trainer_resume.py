"""Resume: a run stopped after a mirrored checkpoint continues from that step on a fresh pod and publishes once."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path
from typing import Any

import pytest
from trainer_helpers import env, keys, make_cfg, stdlib_pairs, tiny_spec, upload_pairs
from transformers import TrainerCallback

from eft_cli.run import run_config
from eft_devtools.local_s3 import LocalS3

pytestmark = pytest.mark.slow


class Crash(RuntimeError):
    pass


class CrashAfter(TrainerCallback):  # type: ignore[misc]
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if state.global_step >= self.step:
            raise Crash(f"simulated pod death at step {state.global_step}")


class SigtermAt(TrainerCallback):  # type: ignore[misc]
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if state.global_step == self.step - 1:
            os.kill(os.getpid(), signal.SIGTERM)  # the kubelet's SIGTERM, arriving mid-step


def test_sigterm_checkpoints_then_the_retry_resumes(
    s3_server: LocalS3, s3_bucket: str, tmp_path: Path, model_dir: Path
) -> None:
    upload_pairs(s3_server, s3_bucket, stdlib_pairs(130))
    spec = tiny_spec(s3_bucket, s3_server.endpoint, checkpointSteps=100)
    cfg = make_cfg(spec, tmp_path / "pod1", model_dir, name="sigterm")
    before = signal.getsignal(signal.SIGTERM)
    with env(s3_server.env()):
        code, msg = run_config(cfg, callbacks=[SigtermAt(5)])
    assert signal.getsignal(signal.SIGTERM) == before  # the handler is the trainer's only while training
    assert code == 1 and msg is not None and "SIGTERM at step 5" in msg.message
    prefix = cfg.run.output_prefix.split("/", 3)[3]
    marker = json.loads(
        s3_server.client().get_object(Bucket=s3_bucket, Key=prefix + "checkpoints/latest.json")["Body"].read()
    )
    assert marker == {"checkpoint": "checkpoint-5"}
    assert prefix + "manifest.json" not in keys(s3_server, s3_bucket, prefix)
    cfg2 = cfg.model_copy(update={"settings": cfg.settings.model_copy(update={"work_dir": str(tmp_path / "pod2")})})
    with env(s3_server.env()):
        code, msg = run_config(cfg2)
    assert code == 0, msg
    rep = json.loads(s3_server.client().get_object(Bucket=s3_bucket, Key=prefix + "report.json")["Body"].read())
    assert rep["training"]["resumedFromStep"] == 5


def test_resume_from_mirrored_checkpoint(s3_server: LocalS3, s3_bucket: str, tmp_path: Path, model_dir: Path) -> None:
    upload_pairs(s3_server, s3_bucket, stdlib_pairs(130))
    spec = tiny_spec(s3_bucket, s3_server.endpoint, checkpointSteps=10)
    cfg = make_cfg(spec, tmp_path / "pod1", model_dir, name="resume")
    with env(s3_server.env()):
        code, msg = run_config(cfg, callbacks=[CrashAfter(12)])
    assert code == 1 and msg is not None and msg.reason == "TrainerCrashed" and "step 12" in msg.message
    prefix = cfg.run.output_prefix.split("/", 3)[3]
    assert prefix + "manifest.json" not in keys(s3_server, s3_bucket, prefix)  # nothing published
    marker = json.loads(
        s3_server.client().get_object(Bucket=s3_bucket, Key=prefix + "checkpoints/latest.json")["Body"].read()
    )
    assert marker == {"checkpoint": "checkpoint-10"}

    # A fresh pod: empty work dir, same run config.
    shutil.rmtree(tmp_path / "pod1")
    cfg2 = cfg.model_copy(update={"settings": cfg.settings.model_copy(update={"work_dir": str(tmp_path / "pod2")})})
    with env(s3_server.env()):
        code, msg = run_config(cfg2)
    assert code == 0, msg
    rep = json.loads(s3_server.client().get_object(Bucket=s3_bucket, Key=prefix + "report.json")["Body"].read())
    assert rep["training"]["resumedFromStep"] == 10
    steps_per_epoch = -(-rep["data"]["trainRows"] // 8)
    assert rep["training"]["steps"] == steps_per_epoch  # continued to the end of the schedule, not restarted
    published = keys(s3_server, s3_bucket, prefix)
    assert published.count(prefix + "manifest.json") == 1
