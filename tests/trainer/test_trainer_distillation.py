"""``method: distillation``: the pure parts by tables, format parallel's checks, and runs against SeaweedFS.

The only embedding model on this machine is the packaged all-MiniLM-L6-v2, so the teacher of the runs is
MiniLM itself (loaded from s3://), or MiniLM with a Dense layer to 256 dims to exercise the projection:
these runs test the plumbing only (targets, training, resume, the teacher measured beside base and
student), not that distillation from a bigger model helps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_trainer_resume import SigtermAt
from trainer_helpers import HUB_ID, env, keys, make_cfg, s3_json, spec_dict, stdlib_pairs, tiny_spec, upload_pairs

from eft_api.contract import ExitCode, Reason
from eft_api.spec import Columns, DataFormat, TeacherSpec, parse_spec
from eft_cli.run import run_config
from eft_devtools.local_s3 import LocalS3
from eft_trainer import data as D
from eft_trainer.errors import InvalidCorpus, InvalidSpecError
from eft_trainer.evaluation import EvalResult
from eft_trainer.methods import for_spec
from eft_trainer.methods.distillation import cache_key, distillation_texts, pca_reduce, projection_needed
from eft_trainer.report import teacher_figures

P = DataFormat.PAIRS


@pytest.mark.parametrize(
    ("rows", "fmt", "texts", "targets"),
    [
        ([{"anchor": "q", "positive": "d"}], P, ["q", "d"], ["q", "d"]),
        (  # a text repeated across rows is distilled once
            [{"anchor": "q1", "positive": "d"}, {"anchor": "q2", "positive": "d"}],
            P,
            ["q1", "d", "q2"],
            ["q1", "d", "q2"],
        ),
        (
            [{"anchor": "q", "positive": "d", "negative_2": "n2", "negative_1": "n1"}],
            DataFormat.TRIPLETS,
            ["q", "d", "n1", "n2"],
            ["q", "d", "n1", "n2"],
        ),
        ([{"sentence1": "a", "sentence2": "b", "score": 0.5}], DataFormat.SCORED_PAIRS, ["a", "b"], ["a", "b"]),
        ([{"text": "t", "label": "x"}], DataFormat.LABELED_TEXTS, ["t"], ["t"]),
        (  # parallel: the translation learns the teacher's embedding of the source
            [{"anchor": "the cat", "positive": "die Katze"}, {"anchor": "a dog", "positive": "ein Hund"}],
            DataFormat.PARALLEL,
            ["the cat", "die Katze", "a dog", "ein Hund"],
            ["the cat", "the cat", "a dog", "a dog"],
        ),
        (  # a translation shared by two sources keeps the first source's target
            [{"anchor": "hello", "positive": "hallo"}, {"anchor": "hi", "positive": "hallo"}],
            DataFormat.PARALLEL,
            ["hello", "hallo", "hi"],
            ["hello", "hello", "hi"],
        ),
    ],
)
def test_distillation_texts(rows: list[dict[str, Any]], fmt: DataFormat, texts: list[str], targets: list[str]) -> None:
    assert distillation_texts(rows, fmt) == (texts, targets)


TEACHER = TeacherSpec(base="s3://models/teacher/")


def test_the_method_is_chosen_from_the_spec_and_needs_a_reindex() -> None:
    spec = spec_dict("bkt", "http://127.0.0.1:1", method="distillation", loss="MSE", teacher={"base": HUB_ID})
    method = for_spec(parse_spec(spec))
    assert (method.name, method.reindex_required) == ("distillation", True)


@pytest.mark.parametrize(
    ("teacher_dim", "student_dim", "projection", "expect"),
    [(384, 384, "none", False), (384, 384, "pca", False), (768, 384, "pca", True)],
)
def test_pca_only_when_the_teacher_is_wider(teacher_dim: int, student_dim: int, projection: str, expect: bool) -> None:
    teacher = TEACHER.model_copy(update={"projection": projection})
    assert projection_needed(teacher_dim, student_dim, teacher) is expect


@pytest.mark.parametrize(
    ("teacher_dim", "projection", "says"),
    [(768, "none", "projection pca"), (256, "none", "projection pca"), (256, "pca", "PCA can only reduce")],
)
def test_a_teacher_that_cannot_fit_the_student_is_refused_naming_the_field(
    teacher_dim: int, projection: str, says: str
) -> None:
    with pytest.raises(InvalidSpecError) as err:
        projection_needed(teacher_dim, 384, TEACHER.model_copy(update={"projection": projection}))
    assert err.value.message.startswith("spec.training.teacher: ") and says in err.value.message


def test_pca_keeps_the_main_directions_and_normalises() -> None:
    rng = np.random.default_rng(0)
    # 3-dim embeddings that vary along two directions only: 2 components keep every distance.
    basis = np.array([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]) / np.array([[np.sqrt(2)], [1.0]])
    x = (rng.normal(size=(50, 2)) @ basis).astype(np.float32)
    out = pca_reduce(x, 2, normalize=False)
    assert out.shape == (50, 2) and out.dtype == np.float32
    d_in = np.linalg.norm(x[:, None] - x[None], axis=-1)
    d_out = np.linalg.norm(out[:, None] - out[None], axis=-1)
    assert np.allclose(d_in, d_out, atol=1e-4)
    assert np.array_equal(out, pca_reduce(x, 2, normalize=False))  # deterministic (signs fixed)
    assert np.allclose(np.linalg.norm(pca_reduce(x, 2, normalize=True), axis=1), 1.0, atol=1e-5)


def test_pca_needs_as_many_texts_as_dimensions() -> None:
    with pytest.raises(InvalidCorpus) as err:
        pca_reduce(np.ones((10, 8), dtype=np.float32), 16, normalize=True)
    assert "spec.training.teacher.projection pca: 10 distinct training texts" in err.value.message


def test_cache_key_changes_with_the_teacher_and_the_texts() -> None:
    key = cache_key(TEACHER, ["a", "b"])
    assert key == cache_key(TEACHER, ["a", "b"])
    assert key != cache_key(TEACHER, ["a", "c"])
    assert key != cache_key(TEACHER, ["ab"])  # texts are separated, not concatenated
    assert key != cache_key(TEACHER.model_copy(update={"revision": "v2"}), ["a", "b"])


def _result(per_query: dict[int, list[float]]) -> EvalResult:
    metrics = {d: {"ndcg@10": sum(v) / len(v)} for d, v in per_query.items()}
    return EvalResult(metrics, {d: {"ndcg@10": v} for d, v in per_query.items()})


@pytest.mark.parametrize(
    ("teacher", "student", "dimension", "primary", "gap"),
    [
        ({384: [1.0, 0.5]}, {384: [0.5, 0.5]}, 384, 0.75, -0.25),  # same dimension: the paired gap
        ({768: [1.0, 1.0], 256: [0.0, 1.0]}, {384: [0.5, 0.5]}, 768, 1.0, None),  # a wider teacher (pca)
        ({384: [0.0, 1.0], 128: [0.0, 0.0]}, {384: [1.0, 1.0], 128: [1.0, 0.0]}, 128, 0.0, 0.5),  # the gate's
    ],
)
def test_teacher_figures(
    teacher: dict[int, list[float]], student: dict[int, list[float]], dimension: int, primary: float, gap: float | None
) -> None:
    out = teacher_figures(_result(teacher), _result(student), "ndcg@10", min(student), seed=0)
    assert (out["dimension"], out["primary"]) == (dimension, primary)
    assert set(out["metrics"]) == {str(d) for d in teacher}
    if gap is None:
        assert "studentMinusTeacher" not in out
    else:
        assert out["studentMinusTeacher"]["gain"] == pytest.approx(gap)
        assert out["studentMinusTeacher"]["queries"] == 2


def _rows(*data: dict[str, Any]) -> list[D.Row]:
    return [D.Row(d, "s3://b/parallel.jsonl", i + 1) for i, d in enumerate(data)]


@pytest.mark.parametrize(
    ("row", "problem"),
    [
        ({"en": "the cat"}, "s3://b/parallel.jsonl:2: missing column(s) de"),
        ({"en": "the cat", "de": "  "}, "s3://b/parallel.jsonl:2: column de is empty"),
        ({"en": 7, "de": "sieben"}, "s3://b/parallel.jsonl:2: column en must be text, got int"),
    ],
)
def test_parallel_rows_are_checked_with_file_and_line(row: dict[str, Any], problem: str) -> None:
    cols = Columns(source="en", translation="de")
    with pytest.raises(InvalidCorpus) as err:
        D.map_and_check(_rows({"en": "a dog", "de": "ein Hund"}, row), DataFormat.PARALLEL, cols)
    assert problem in err.value.message


def test_parallel_rows_map_to_source_and_translation() -> None:
    cols = Columns(source="en", translation="de")
    rows = D.map_and_check(_rows({"en": "a dog", "de": "ein Hund", "id": 1}), DataFormat.PARALLEL, cols)
    assert rows == [{"anchor": "a dog", "positive": "ein Hund"}]
    kept, stats = D.drop_duplicates([*rows, *rows, {"anchor": "OK", "positive": "OK"}], DataFormat.PARALLEL)
    assert kept == rows and stats.duplicates_dropped == 1 and stats.same_text_dropped == 1


# ---------------------------------------------------------------- runs against SeaweedFS (plumbing only)


def _upload_model(s3: LocalS3, bucket: str, folder: Path, prefix: str) -> str:
    client = s3.client()
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        client.put_object(Bucket=bucket, Key=prefix + f.relative_to(folder).as_posix(), Body=f.read_bytes())
    return f"s3://{bucket}/{prefix}"


def _report(s3: LocalS3, bucket: str, prefix: str) -> dict[str, Any]:
    rep: dict[str, Any] = s3_json(s3, bucket, prefix + "report.json")
    return rep


def _distill_spec(bucket: str, endpoint: str, teacher: dict[str, Any], **training: Any) -> dict[str, Any]:
    spec = tiny_spec(bucket, endpoint, method="distillation", loss="MSE", teacher=teacher, **training)
    spec["data"]["eval"]["maxDistractors"] = 100
    return spec


@pytest.fixture(scope="module")
def teachers(s3_server: LocalS3, model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """MiniLM itself, and MiniLM with a Dense layer to 512 dims (a wider teacher), in S3."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense

    bucket = "distill-teachers"
    s3_server.create_bucket(bucket)
    minilm = model_dir / HUB_ID
    model = SentenceTransformer(str(minilm), device="cpu")
    torch.manual_seed(0)
    model.append(Dense(384, 512, activation_function=torch.nn.Identity()))
    wide = tmp_path_factory.mktemp("teacher-512")
    model.save(str(wide))
    return {
        "same": _upload_model(s3_server, bucket, minilm.resolve(), "minilm/"),
        "512": _upload_model(s3_server, bucket, wide, "minilm-512/"),
    }


pytest_slow = pytest.mark.slow


@pytest_slow
def test_distillation_publishes_a_student_measured_beside_its_teacher(
    s3_server: LocalS3, s3_bucket: str, tmp_path: Path, model_dir: Path, teachers: dict[str, str]
) -> None:
    upload_pairs(s3_server, s3_bucket, stdlib_pairs(120))
    spec = _distill_spec(s3_bucket, s3_server.endpoint, {"base": teachers["same"], "maxSeqLength": 32})
    cfg = make_cfg(spec, tmp_path, model_dir, name="distill")
    with env(s3_server.env()):
        code, msg = run_config(cfg, max_steps=4)
    assert code == 0 and msg is not None, msg
    assert "teacher" in msg.message and msg.index is not None and msg.index.reindex_required
    prefix = cfg.run.output_prefix.split("/", 3)[3]
    rep = _report(s3_server, s3_bucket, prefix)
    assert rep["config"]["method"] == "distillation" and rep["config"]["loss"] == "MSE"
    t = rep["teacher"]
    assert t["dimension"] == 384 and 0 <= t["primary"] <= 1 and set(t["metrics"]) == {"384"}
    # The teacher is the base model itself (with the same maxSeqLength): the base's figures, on the same evaluation.
    assert t["primary"] == pytest.approx(rep["headline"]["base"], abs=1e-6)
    assert t["studentMinusTeacher"]["queries"] == rep["headline"]["bootstrap"]["queries"]
    tr = rep["training"]
    assert tr["steps"] == 4 and tr["projection"] == "none" and tr["teacherDimension"] == 384
    assert tr["textsDistilled"] == len({x for p in stdlib_pairs(120) for x in p.values()}) - _held_out(rep)
    assert any(k.startswith(prefix + "checkpoints/teacher-embeddings/") for k in keys(s3_server, s3_bucket, prefix))
    md = s3_server.client().get_object(Bucket=s3_bucket, Key=prefix + "report.md")["Body"].read().decode()
    assert "## Teacher (method distillation)" in md


def _held_out(rep: dict[str, Any]) -> int:
    """Texts of the held-out rows (each row a distinct question and answer here): never distilled."""
    return 2 * int(rep["data"]["evalRows"])


@pytest_slow
def test_a_teacher_of_another_dimension_needs_a_projection(
    s3_server: LocalS3, s3_bucket: str, tmp_path: Path, model_dir: Path, teachers: dict[str, str]
) -> None:
    upload_pairs(s3_server, s3_bucket, stdlib_pairs(60))
    spec = _distill_spec(s3_bucket, s3_server.endpoint, {"base": teachers["512"]})
    cfg = make_cfg(spec, tmp_path / "refused", model_dir, name="no-projection")
    with env(s3_server.env()):
        code, msg = run_config(cfg, max_steps=2)
    assert code == ExitCode.BAD_INPUT and msg is not None and msg.reason == Reason.INVALID_SPEC
    assert msg.message.startswith("spec.training.teacher: ") and "512-dim" in msg.message


@pytest_slow
def test_a_wider_teacher_with_pca_trains_a_student_that_keeps_its_dimension(
    s3_server: LocalS3, s3_bucket: str, tmp_path: Path, model_dir: Path, teachers: dict[str, str]
) -> None:
    upload_pairs(s3_server, s3_bucket, stdlib_pairs(260))  # >= 384 distinct texts to fit 384 components
    spec = _distill_spec(s3_bucket, s3_server.endpoint, {"base": teachers["512"], "projection": "pca"})
    cfg = make_cfg(spec, tmp_path / "work", model_dir, name="pca")
    with env(s3_server.env()):
        code, msg = run_config(cfg, max_steps=2)
    assert code == 0 and msg is not None, msg
    assert msg.index is not None and msg.index.dimension == 384
    rep = _report(s3_server, s3_bucket, cfg.run.output_prefix.split("/", 3)[3])
    assert rep["training"]["projection"] == "pca" and rep["training"]["teacherDimension"] == 512
    assert rep["teacher"]["dimension"] == 512 and "studentMinusTeacher" not in rep["teacher"]


@pytest_slow
def test_parallel_data_evaluates_translated_text_retrieval(
    s3_server: LocalS3, s3_bucket: str, tmp_path: Path, model_dir: Path, teachers: dict[str, str]
) -> None:
    # Stand-in translations (no parallel corpus here): the name is the "source", its docstring the "translation".
    rows = [{"en": p["question"], "xx": p["answer"]} for p in stdlib_pairs(80)]
    upload_pairs(s3_server, s3_bucket, rows, key="corpus/parallel.jsonl")
    spec = _distill_spec(s3_bucket, s3_server.endpoint, {"base": teachers["same"]})
    spec["data"]["train"] = {
        "uri": f"s3://{s3_bucket}/corpus/parallel.jsonl",
        "format": "parallel",
        "columns": {"source": "en", "translation": "xx"},
    }
    cfg = make_cfg(spec, tmp_path / "work", model_dir, name="parallel")
    with env(s3_server.env()):
        code, msg = run_config(cfg, max_steps=2)
    assert code == 0 and msg is not None, msg
    rep = _report(s3_server, s3_bucket, cfg.run.output_prefix.split("/", 3)[3])
    assert rep["config"]["format"] == "parallel"
    # Held-out sources are the queries, their translations the relevant documents.
    assert rep["data"]["evalQueries"] == rep["data"]["evalRows"] > 0
    tr = rep["training"]
    assert (
        tr["textsDistilled"] == 2 * rep["data"]["trainRows"] and tr["teacherTextsEmbedded"] == rep["data"]["trainRows"]
    )


@pytest_slow
def test_sigterm_then_the_retry_resumes_without_embedding_again(
    s3_server: LocalS3, s3_bucket: str, tmp_path: Path, model_dir: Path, teachers: dict[str, str]
) -> None:
    upload_pairs(s3_server, s3_bucket, stdlib_pairs(130))
    spec = _distill_spec(s3_bucket, s3_server.endpoint, {"base": teachers["same"]}, checkpointSteps=10)
    cfg = make_cfg(spec, tmp_path / "pod1", model_dir, name="distill-sigterm")
    with env(s3_server.env()):
        code, msg = run_config(cfg, callbacks=[SigtermAt(3)], max_steps=6)
    assert code == ExitCode.CRASHED and msg is not None and "SIGTERM at step 3" in msg.message, msg
    prefix = cfg.run.output_prefix.split("/", 3)[3]
    assert prefix + "manifest.json" not in keys(s3_server, s3_bucket, prefix)
    cfg2 = cfg.model_copy(update={"settings": cfg.settings.model_copy(update={"work_dir": str(tmp_path / "pod2")})})
    with env(s3_server.env()):
        code, msg = run_config(cfg2, max_steps=6)
    assert code == 0, msg
    tr = _report(s3_server, s3_bucket, prefix)["training"]
    assert tr["resumedFromStep"] == 3 and tr["steps"] == 6 and tr["teacherEmbeddingsCached"] is True
