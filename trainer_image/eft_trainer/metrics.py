"""Prometheus progress metrics of the trainer pod (names fixed by the contract; labels bounded)."""

from __future__ import annotations

import logging
import time
from typing import Any

log = logging.getLogger(__name__)

#: The trainer's phases in run order (``eft_trainer_phase_info{phase}``); the operator turns them into
#: ``status.trainerStatus`` (eft_operator.progress), which tolerates phases it does not know.
PHASES = (
    "fetch",
    "generate",
    "check",
    "evaluate-base",
    "mine",
    "label",
    "pretrain",
    "train",
    "evaluate-finetuned",
    "evaluate-teacher",
    "merge",
    "baselines",
    "publish",
    "done",
    "failed",
)


class Progress:
    """Gauges in their own registry, served on ``addr:port`` (port 0 = not served)."""

    def __init__(self, port: int = 0, addr: str = "0.0.0.0") -> None:
        from prometheus_client import CollectorRegistry, Gauge

        self.registry = CollectorRegistry()
        self.step = Gauge("eft_trainer_step", "Optimizer steps done", registry=self.registry)
        self.epoch = Gauge("eft_trainer_epoch", "Epochs done (fractional)", registry=self.registry)
        self.loss = Gauge("eft_trainer_loss", "Last logged training loss", registry=self.registry)
        self.max_steps = Gauge(
            "eft_trainer_max_steps", "Optimizer steps the training will take in all", registry=self.registry
        )
        self.sps = Gauge(
            "eft_trainer_samples_per_second",
            "Training rows per second (rows the loss saw, all processes; a short batch counts short)",
            registry=self.registry,
        )
        self.eta = Gauge("eft_trainer_eta_seconds", "Estimated seconds of training left", registry=self.registry)
        self.eval_metric = Gauge(
            "eft_trainer_eval_metric",
            "Evaluation metric per model (base or finetuned), metric and dimension",
            ["model", "metric", "dim"],
            registry=self.registry,
        )
        self.phase = Gauge("eft_trainer_phase_info", "1 for the current phase", ["phase"], registry=self.registry)
        for unknown in (self.loss, self.sps, self.eta):  # NaN until known, not a misleading 0
            unknown.set(float("nan"))
        self.server: Any = None
        self._phases: dict[str, None] = dict.fromkeys(PHASES)
        if port:
            from prometheus_client import start_http_server

            self.server = start_http_server(port, addr=addr, registry=self.registry)
            log.info("serving Prometheus metrics on :%d/metrics", port)

    def set_phase(self, phase: str) -> None:
        """Mark ``phase`` current (a phase outside PHASES is served too: the label set stays bounded)."""
        self._phases.setdefault(phase)
        for p in self._phases:
            self.phase.labels(phase=p).set(1 if p == phase else 0)

    def record_eval(self, model: str, metrics: dict[int, dict[str, float]]) -> None:
        for dim, values in metrics.items():
            for name, v in values.items():
                self.eval_metric.labels(model=model, metric=name, dim=str(dim)).set(v)

    def close(self) -> None:
        if self.server is not None:
            server, _thread = self.server
            server.shutdown()
            self.server = None

    def callback(self, batch_size: int) -> Any:
        """A TrainerCallback that sets the gauges after every optimizer step.

        Throughput counts the rows the loss actually saw when the trainer binds ``rows_source`` (a
        callable giving the rows trained so far, all processes): the batch sampler may split or drop a
        batch (no duplicate texts, a short tail), so steps x ``batch_size`` would overstate it. Without a
        source it falls back to steps x ``batch_size``.
        """
        from transformers import TrainerCallback

        progress = self

        class ProgressCallback(TrainerCallback):  # type: ignore[misc]
            def __init__(self) -> None:
                self.t0 = 0.0
                self.step0 = 0
                self.rows0 = 0
                #: Set by the training loop: rows trained so far (all processes).
                self.rows_source: Any = None

            def _rows(self, step: int) -> int:
                return int(self.rows_source()) if self.rows_source is not None else step * batch_size

            def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                self.t0 = time.perf_counter()
                self.step0 = int(state.global_step)
                self.rows0 = self._rows(self.step0)
                progress.step.set(self.step0)
                progress.max_steps.set(int(state.max_steps))

            def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                step = int(state.global_step)
                progress.step.set(step)
                progress.max_steps.set(int(state.max_steps))
                progress.epoch.set(float(state.epoch or 0.0))
                done = step - self.step0
                elapsed = time.perf_counter() - self.t0
                if done > 0 and elapsed > 0:
                    progress.sps.set((self._rows(step) - self.rows0) / elapsed)
                    progress.eta.set(max(0, int(state.max_steps) - step) * elapsed / done)

            def on_log(
                self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any
            ) -> None:
                if logs and "loss" in logs:
                    progress.loss.set(float(logs["loss"]))
                    log.info(
                        "step %d/%d epoch %.2f loss %.4f",
                        state.global_step,
                        state.max_steps,
                        state.epoch or 0,
                        logs["loss"],
                    )

        return ProgressCallback()
