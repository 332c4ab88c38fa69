"""The trainer's progress gauges: throughput counts rows actually trained, total steps are served."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from trainer_helpers import HUB_ID

from eft_trainer.metrics import Progress
from eft_trainer.storage import LocalStore


def test_throughput_counts_the_rows_the_source_reports_not_steps_times_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    import eft_trainer.metrics as m

    clock = iter([100.0, 102.0])
    monkeypatch.setattr(m.time, "perf_counter", lambda: next(clock))
    prog = Progress(0)
    cb = prog.callback(batch_size=16)
    rows = [0]
    cb.rows_source = lambda: rows[0]
    state = SimpleNamespace(global_step=0, max_steps=10, epoch=0.0)
    cb.on_train_begin(None, state, None)
    assert prog.max_steps._value.get() == 10
    rows[0] = 20  # two steps, but the sampler split a batch: 20 rows, not 32
    state.global_step, state.epoch = 2, 0.2
    cb.on_step_end(None, state, None)
    assert prog.sps._value.get() == pytest.approx(20 / 2.0)
    assert prog.eta._value.get() == pytest.approx(8 * 2.0 / 2)
    assert prog.step._value.get() == 2 and prog.epoch._value.get() == pytest.approx(0.2)


@pytest.mark.slow
def test_the_real_trainer_binds_the_rows_it_trained(model_dir: Path, tmp_path: Path) -> None:
    """30 questions over 4 passages, batch 8: batches are cut short (no repeated passage in a batch)."""
    from sentence_transformers import SentenceTransformer

    from eft_api.spec import DataFormat, Loss, TrainingSpec
    from eft_trainer.training import to_dataset, train

    n = 30
    rows = [{"anchor": f"question {i}", "positive": f"passage {i % 4}"} for i in range(n)]
    model = SentenceTransformer(str(model_dir / HUB_ID))
    model.max_seq_length = 16
    prog = Progress(0)
    cb: Any = prog.callback(batch_size=8)
    spec = TrainingSpec(
        loss=Loss.MULTIPLE_NEGATIVES_RANKING, batch_size=8, epochs=1, learning_rate=1e-6, checkpoint_steps=1000
    )
    stats = train(
        model,
        to_dataset(rows, DataFormat.PAIRS, spec.loss),
        spec,
        DataFormat.PAIRS,
        tmp_path,
        storage=LocalStore(tmp_path / "store"),
        callbacks=[cb],
    )
    assert cb.rows_source is not None and cb.rows_source() == stats.samples == n
    assert stats.steps * 8 > n  # steps x batch would have overstated the rows
    assert prog.max_steps._value.get() == stats.steps == prog.step._value.get()
