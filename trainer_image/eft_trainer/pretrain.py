"""``training.pretrain``: an unsupervised first stage (TSDAE) that adapts the base model to the domain.

TSDAE (Wang, Reimers and Gurevych, 2021) trains a denoising auto-encoder: the encoder embeds a sentence with
words deleted, and a decoder, tied to the encoder and fed only that embedding, rebuilds the whole sentence
(sentence-transformers' ``DenoisingAutoEncoderLoss``). The method of the run then trains the adapted model.

Steps: :func:`sentence_texts` (the texts: the training rows', or ``pretrain.data``'s column), then
:func:`select_sentences` (split into sentences without nltk, distinct, a seeded sample of at most
``maxSentences``), :func:`noisy_dataset` (word deletion as a ``datasets`` map, seeded per sentence), and
:func:`pretrain_stage` (train with ``SentenceTransformerTrainer``, checkpoints mirrored like the main stage's).

S3, under the run's checkpoint prefix: ``checkpoints/pretrain/checkpoint-<step>/`` and
``checkpoints/pretrain/latest.json`` while it trains (a pod stopped then resumes pre-training); then the
adapted model under ``checkpoints/pretrain/model/`` and ``checkpoints/pretrain/done.json`` LAST (the report's
section), so a pod stopped during the main stage loads the adapted model instead of pre-training again.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eft_api.contract import CHECKPOINTS_DIR, RunConfig
from eft_api.spec import DataFormat, PretrainSpec, TrainingSpec, training_format
from eft_trainer import data as D
from eft_trainer.documents import split_sentences
from eft_trainer.errors import InvalidCorpus, InvalidSpecError
from eft_trainer.publish import sha256_file
from eft_trainer.storage import S3Uri, Store, base_uri, fetch
from eft_trainer.training import TrainStats, train

log = logging.getLogger(__name__)

#: Where the stage keeps its checkpoints, adapted model and marker, under the run's checkpoints/ prefix.
PRETRAIN_DIR = "pretrain/"
DONE = "done.json"
ADAPTED_DIR = "model/"
#: A sentence needs this many words to be trained on (shorter ones are headings, labels, code fragments).
MIN_WORDS = 3
#: The decoder's own weights (cross-attention, LM head) in a checkpoint: the encoder's are the model's.
DECODER_FILE = "tsdae-decoder.safetensors"
#: The field a pre-training data problem is reported on.
DATA_FIELD = "spec.training.pretrain.data"

# ---------------------------------------------------------------- sentences and noise (pure)


def select_sentences(
    texts: Iterable[str], max_sentences: int, seed: int, min_words: int = MIN_WORDS
) -> tuple[list[str], int]:
    """Distinct sentences of at least ``min_words`` words, in first-seen order; a seeded sample of
    ``max_sentences`` (kept in that order) when there are more. Returns them and how many there were. Pure."""
    seen: dict[str, None] = {}
    for text in texts:
        for s in split_sentences(text):
            if len(s.split()) >= min_words:
                seen.setdefault(s, None)
    sentences = list(seen)
    available = len(sentences)
    if available > max_sentences:
        keep = sorted(random.Random(seed).sample(range(available), max_sentences))
        sentences = [sentences[i] for i in keep]
    return sentences, available


def delete_words(text: str, ratio: float, rng: random.Random) -> str:
    """``text`` with each word deleted with probability ``ratio``; at least one word is kept. Pure (given rng)."""
    words = text.split()
    if not words:
        return text
    kept = [w for w in words if rng.random() >= ratio]
    if not kept:
        kept = [words[rng.randrange(len(words))]]
    return " ".join(kept)


def noise_batch(batch: dict[str, list[str]], indices: list[int], *, ratio: float, seed: int) -> dict[str, list[str]]:
    """The ``datasets`` map function: the damaged sentence (column ``noisy``, first: the loss's input) and the
    original (``text``: what the decoder rebuilds). Each row's noise is seeded by (seed, row), so a resumed or
    repeated run sees the same noise. Pure."""
    texts = batch["text"]
    noisy = [delete_words(t, ratio, random.Random(f"{seed}:{i}")) for t, i in zip(texts, indices, strict=True)]
    return {"noisy": noisy, "text": texts}


def training_texts(rows: Sequence[dict[str, Any]], fmt: DataFormat) -> list[str]:
    """The distinct texts of the training rows: the chunks (positives) of generated pairs for documents, else
    every text column (anchor, positive, negatives; sentence1, sentence2; text). Pure."""
    if fmt is DataFormat.DOCUMENTS:
        keys: Sequence[str] | None = ("positive",)
    elif fmt is DataFormat.SCORED_PAIRS:
        keys = ("sentence1", "sentence2")
    elif fmt is DataFormat.LABELED_TEXTS:
        keys = ("text",)
    else:
        keys = None  # anchor, positive and negative_<i>
    seen: dict[str, None] = {}
    for r in rows:
        for k, v in r.items():
            if isinstance(v, str) and (k in keys if keys is not None else k != "label"):
                seen.setdefault(v, None)
    return list(seen)


def column_texts(rows: Sequence[Any], column: str, where: str) -> list[str]:
    """The ``column`` of each data row (``data.Row``); InvalidCorpus naming file and line when it is missing or
    not a string (the first five problems). Pure."""
    problems: list[str] = []
    out: list[str] = []
    for row in rows:
        v = row.data.get(column)
        if not isinstance(v, str):
            what = "has no" if v is None else f"has a {type(v).__name__} in"
            problems.append(f"{row.file} line {row.line} {what} column {column!r}")
        else:
            out.append(v)
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise InvalidCorpus(f"{where}: " + "; ".join(problems[:5]) + more + f" (set {DATA_FIELD}.columns.text)")
    return out


# ---------------------------------------------------------------- the stage (I/O)


@dataclass
class Pretrained:
    """The adapted model (loaded afresh from its saved folder), the report's section, the training statistics
    (``interrupted``: SIGTERM stopped the stage; the run stops and its retry resumes pre-training) and the
    pre-training data's files (URI, size, sha256)."""

    model: Any
    section: dict[str, Any]
    stats: Any  # eft_trainer.training.TrainStats
    files: list[dict[str, Any]]


def noisy_dataset(sentences: Sequence[str], ratio: float, seed: int) -> Any:
    import datasets

    ds = datasets.Dataset.from_dict({"text": list(sentences)})
    return ds.map(
        noise_batch, batched=True, with_indices=True, fn_kwargs={"ratio": ratio, "seed": seed}, remove_columns=["text"]
    )


def fetch_texts(
    pre: PretrainSpec,
    rows: Sequence[dict[str, Any]],
    fmt: DataFormat,
    storage: Store,
    work: Path,
) -> tuple[list[str], str, list[dict[str, Any]]]:
    """The texts to split into sentences, where they came from (for the report), and the files read."""
    if pre.data is None:
        return training_texts(rows, fmt), "training data", []
    dest = work / "data" / "pretrain"
    if dest.exists():
        shutil.rmtree(dest)
    uri = pre.data.uri
    files = fetch(storage, uri, dest)
    base = base_uri(uri)
    what = f"the pre-training data ({DATA_FIELD}.uri)"
    texts = column_texts(
        D.read_files(files, pre.data.file_type, dest, base_uri=base, what=what), pre.data.columns.text, what
    )
    entries = [
        {
            "uri": base + f.relative_to(dest).as_posix(),
            "bytes": f.stat().st_size,
            "sha256": sha256_file(f),
            "stage": "pretrain",
        }
        for f in files
    ]
    return texts, uri, entries


def decoder_callbacks(loss: Any) -> list[Any]:
    """Keep the decoder's own weights (those not tied to the encoder: cross-attention, LM head) in each
    checkpoint, before it is mirrored, and put them back when training resumes from a checkpoint."""
    from safetensors.torch import load_file, save_file
    from transformers import TrainerCallback

    encoder = {id(p) for p in loss.encoder.parameters()}
    own = {n: p for n, p in loss.decoder.named_parameters() if id(p) not in encoder}

    class DecoderWeights(TrainerCallback):  # type: ignore[misc]
        def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if ckpt.is_dir():
                save_file({n: p.detach().contiguous() for n, p in own.items()}, str(ckpt / DECODER_FILE))

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            f = Path(args.output_dir) / f"checkpoint-{state.global_step}" / DECODER_FILE
            if state.global_step > 0 and f.is_file():
                import torch

                saved = load_file(str(f))
                with torch.no_grad():
                    for n, p in own.items():
                        p.copy_(saved[n].to(p.device))
                log.info("restored the TSDAE decoder's own weights from checkpoint-%d", state.global_step)

    return [DecoderWeights()]


def load_adapted(folder: Path, cfg: RunConfig) -> Any:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(folder), trust_remote_code=cfg.spec.model.trust_remote_code)


def _finished_earlier(cfg: RunConfig, storage: Store, prefix: S3Uri, adapted: Path) -> Pretrained | None:
    """The adapted model a previous pod of this run finished and mirrored, if any."""
    if not storage.exists(prefix.join(DONE)):
        return None
    done = json.loads(storage.get_bytes(prefix.join(DONE)))
    if adapted.exists():
        shutil.rmtree(adapted)
    storage.download_tree(prefix.join(ADAPTED_DIR), adapted, allow_object=False)
    log.info("pre-training was finished by an earlier pod: loaded the adapted model from %s", prefix)
    stats = TrainStats(0.0, int(done["section"]["steps"]), 0, 0.0, "", 0, None, False)
    return Pretrained(load_adapted(adapted, cfg), {**done["section"], "reused": True}, stats, done["files"])


def tsdae_loss(cfg: RunConfig, model: Any) -> Any:
    """The TSDAE loss: the decoder is built from the encoder's own folder (offline) and tied to it (the TSDAE
    example's setting)."""
    from sentence_transformers.sentence_transformer.losses import DenoisingAutoEncoderLoss  # heavy: torch

    try:
        return DenoisingAutoEncoderLoss(model, tie_encoder_decoder=True)
    except (ValueError, KeyError, OSError, AssertionError) as exc:
        raise InvalidSpecError(
            f"training.pretrain: tsdae cannot build a decoder from {cfg.spec.model.base} ({type(exc).__name__}: "
            f"{str(exc)[:200]}); it needs a transformer with a causal-LM head class (BERT, RoBERTa, ...)"
        ) from None


def pretrain_training(cfg: RunConfig, pre: PretrainSpec) -> TrainingSpec:
    """The training settings of pre-training: its own epochs, batch and rate; constant rate, no Matryoshka."""
    return cfg.spec.training.model_copy(
        update={
            "epochs": pre.epochs,
            "batch_size": pre.batch_size,
            "learning_rate": pre.learning_rate,
            "warmup_ratio": 0.0,
            "scheduler": "constant",
            "matryoshka_dims": [],
        }
    )


def section(pre: PretrainSpec, source: str, sentences: int, available: int, stats: TrainStats) -> dict[str, Any]:
    """The report's ``pretrain`` section. Pure."""
    return {
        "method": pre.method.value,
        "source": source,
        "sentences": sentences,
        "sentencesAvailable": available,
        "deletionRatio": pre.deletion_ratio,
        "epochs": pre.epochs,
        "batchSize": pre.batch_size,
        "learningRate": pre.learning_rate,
        "steps": stats.steps,
        "resumedFromStep": stats.resumed_from_step,
        "finalLoss": stats.final_loss,
        "seconds": stats.seconds,
        "sentencesPerSecond": stats.samples_per_second,
        "reused": False,
    }


def _mirror_adapted(storage: Store, prefix: S3Uri, adapted: Path, done: dict[str, Any]) -> None:
    t0 = time.perf_counter()
    for f in sorted(p for p in adapted.rglob("*") if p.is_file()):
        storage.upload(f, prefix.join(ADAPTED_DIR + f.relative_to(adapted).as_posix()))
    storage.put_bytes(json.dumps(done).encode(), prefix.join(DONE))
    log.info("mirrored the adapted model to %s in %.1fs", prefix.join(ADAPTED_DIR), time.perf_counter() - t0)


def pretrain_stage(
    cfg: RunConfig,
    model: Any,
    rows: Sequence[dict[str, Any]],
    storage: Store,
    work: Path,
    *,
    callbacks: Sequence[Any] = (),
    max_steps: int = -1,
) -> Pretrained:
    """Adapt ``model`` with TSDAE; or load the adapted model a previous pod of this run finished."""
    pre = cfg.spec.training.pretrain
    assert pre is not None
    folder = work / "pretrain"
    adapted = folder / "adapted"
    prefix = S3Uri.parse(cfg.run.output_prefix).join(CHECKPOINTS_DIR + PRETRAIN_DIR)
    if (earlier := _finished_earlier(cfg, storage, prefix, adapted)) is not None:
        return earlier
    fmt = training_format(cfg.spec)  # the rows' shape: scored pairs once silver labels have scored them
    texts, source, files = fetch_texts(pre, rows, fmt, storage, work)
    seed = cfg.spec.training.seed
    sentences, available = select_sentences(texts, pre.max_sentences, seed)
    if not sentences:
        raise InvalidCorpus(
            f"training.pretrain: no sentence of at least {MIN_WORDS} words in the {source} ({len(texts)} texts)"
        )
    log.info("pre-training (%s) on %d of %d sentences from the %s", pre.method.value, len(sentences), available, source)
    dataset = noisy_dataset(sentences, pre.deletion_ratio, seed)
    loss = tsdae_loss(cfg, model)
    spec = pretrain_training(cfg, pre)
    stats = train(
        model,
        dataset,
        spec,
        fmt,
        folder,
        storage=storage,
        checkpoint_prefix=prefix,
        callbacks=callbacks,
        max_steps=max_steps,
        loss=loss,
        first_callbacks=decoder_callbacks(loss),
    )
    sect = section(pre, source, len(sentences), available, stats)
    if stats.interrupted:
        return Pretrained(model, sect, stats, files)
    if adapted.exists():
        shutil.rmtree(adapted)
    model.save(str(adapted))
    del loss
    _mirror_adapted(storage, prefix, adapted, {"section": sect, "files": files})
    # The main stage starts from the saved adapted model, as a pod that finds it in S3 does.
    return Pretrained(load_adapted(adapted, cfg), sect, stats, files)
