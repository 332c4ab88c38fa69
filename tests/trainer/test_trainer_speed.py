"""bf16 training on CPUs that have bf16 instructions (``precision: bf16``), with batches padded to 8 tokens.

Padding must give the same loss as the plain path on the same batch, bf16 an equivalent one; the speed is
measured in bench/bench_train_throughput.py, not here.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from trainer_helpers import HUB_ID

from eft_api.spec import TrainingSpec
from eft_trainer.storage import LocalStore
from eft_trainer.training import build_loss, cpu_has_bf16, padded_to_multiple, pick_precision

ANCHORS = ["How do I sort a list?", "What is a generator expression in Python, and when should I use one?", "dict"]
POSITIVES = [
    "Use sorted(iterable) for a new list, or list.sort() to sort in place.",
    "A generator expression yields items lazily, like a list comprehension without building the list.",
    "A mapping from hashable keys to values.",
]


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ("flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni", True),
        ("flags\t\t: fpu sse2 avx2 amx_tile amx_bf16 amx_int8", True),
        ("flags\t\t: fpu sse2 avx2 avx512f avx512_vnni", False),
        ("", False),
    ],
)
def test_cpu_bf16_is_read_from_the_cpu_flags(flags: str, expected: bool) -> None:
    assert cpu_has_bf16(flags) is expected


@pytest.mark.parametrize(
    ("precision", "cpu_bf16", "expected"),
    [
        ("bf16", True, "bf16"),  # asked for, and the CPU has bf16 instructions
        ("bf16", False, "fp32"),  # emulated bf16 would be slower than fp32
        ("auto", True, "fp32"),  # bf16 changes the numbers: only when asked for
        ("fp16", True, "fp32"),
    ],
)
def test_cpu_precision(precision: str, cpu_bf16: bool, expected: str) -> None:
    assert pick_precision(precision, False, False, cpu_bf16) == expected


@pytest.fixture(scope="module")
def minilm(model_dir: Path) -> Any:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_dir / HUB_ID), device="cpu")
    model.eval()  # no dropout: the same batch gives the same loss
    return model


def batch_loss(model: Any) -> tuple[float, list[int]]:
    """MNRL + Matryoshka loss of one batch tokenised as the trainer's collator does, and the padded lengths."""
    import torch

    loss = build_loss(model, TrainingSpec(matryoshka_dims=[384, 128, 64]))
    features = [model.preprocess(ANCHORS), model.preprocess(POSITIVES)]
    with torch.no_grad():
        value = float(loss(features, None))
    return value, [int(f["input_ids"].shape[1]) for f in features]


@pytest.mark.slow
def test_padding_to_a_multiple_of_8_gives_the_same_loss(minilm: Any) -> None:
    before = [dict(m.processing_kwargs) for m in minilm.modules() if hasattr(m, "processing_kwargs")]
    plain, plain_lengths = batch_loss(minilm)
    with padded_to_multiple(minilm, 8):
        padded, padded_lengths = batch_loss(minilm)
    assert any(n % 8 for n in plain_lengths)  # the batch really pads further under the lever
    assert all(n % 8 == 0 for n in padded_lengths)
    assert padded == pytest.approx(plain, abs=1e-5)
    # The model published after training tokenises as before (nothing of the padding is saved).
    assert [dict(m.processing_kwargs) for m in minilm.modules() if hasattr(m, "processing_kwargs")] == before


@pytest.mark.slow
def test_bf16_autocast_gives_an_equivalent_loss(minilm: Any) -> None:
    import torch

    fp32, _ = batch_loss(minilm)
    with torch.autocast("cpu", dtype=torch.bfloat16), padded_to_multiple(minilm, 8):
        bf16, _ = batch_loss(minilm)
    assert bf16 == pytest.approx(fp32, rel=0.05)  # about 2% apart on this batch


@pytest.mark.slow
def test_precision_bf16_trains_in_bf16_on_a_cpu_that_has_it(model_dir: Path, tmp_path: Path) -> None:
    """Two steps of real training: bf16 where the CPU has bf16 instructions (fp32 elsewhere), batches padded to
    8 tokens while training, and the trained model tokenises as before."""
    from sentence_transformers import SentenceTransformer

    from eft_api.spec import DataFormat
    from eft_trainer.training import to_dataset, train

    model = SentenceTransformer(str(model_dir / HUB_ID), device="cpu")
    model.max_seq_length = 32
    widths: list[int] = []
    model[0].register_forward_pre_hook(lambda module, args: widths.append(int(args[0]["input_ids"].shape[1])))
    spec = TrainingSpec(batch_size=4, precision="bf16", checkpoint_steps=1000)
    rows = [{"anchor": f"question {i} " * (i + 1), "positive": f"passage {i}"} for i in range(8)]
    ds = to_dataset(rows, DataFormat.PAIRS, spec.loss)
    stats = train(model, ds, spec, DataFormat.PAIRS, tmp_path, storage=LocalStore(tmp_path / "store"))
    expected = "bf16" if cpu_has_bf16(Path("/proc/cpuinfo").read_text()) else "fp32"
    assert (stats.precision, stats.steps) == (expected, 2)
    assert stats.final_loss is not None and math.isfinite(stats.final_loss)
    assert widths
    if expected == "bf16":
        assert all(w % 8 == 0 for w in widths)
    assert "pad_to_multiple_of" not in str(model[0].processing_kwargs)
