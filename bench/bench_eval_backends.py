"""Benchmark: the evaluation encodes on CPU inference backends (ONNX Runtime, OpenVINO, their int8 variants)
against fp32 torch and the stock InformationRetrievalEvaluator.

Every variant scores the same queries and corpus with this trainer's evaluator (encode once, slice per
Matryoshka dimension); only the encoder differs. ``stock`` is sentence-transformers' evaluator run once per
dimension (the baseline of ``bench_eval.py``), ``torch`` our evaluator in fp32 torch (the reference metrics),
``torch-bf16`` the same with the model's weights in bf16 (fast on CPUs with AVX512-BF16 or AMX),
``onnx`` / ``onnx-int8`` ONNX Runtime on an export of the model's transformer (dynamic int8 quantisation of
the weights for int8), ``openvino`` / ``openvino-bf16`` / ``openvino-int8`` OpenVINO on the same export (f32
asked for explicitly; the CPU plugin's default, bf16 on CPUs that have it; nncf's static int8 quantisation,
calibrated on 64 corpus passages), each with the model's own tokenizer and mean pooling.
Each runs in a fresh process; the export and quantisation run before the timed part and are reported apart
(in the trainer they would be paid for every model evaluated: base and fine-tuned). Prints each variant's
time as a ratio to the stock evaluator's (target 0.15) and its largest metric difference to fp32 torch
(must be <= 1e-3 to be usable).

The backends are not dependencies of the project: ``optimum-onnx`` and ``optimum-intel`` (what
``SentenceTransformer(backend=...)`` needs) require older transformers than the trainer's, so this script
uses the runtimes directly. Install them apart, for example
``pip install --no-deps --target /tmp/extras onnx onnxruntime protobuf flatbuffers ml_dtypes coloredlogs
humanfriendly openvino openvino-telemetry nncf natsort pydot tabulate`` and put that folder last on
PYTHONPATH.

    python bench/bench_eval_backends.py [--queries 150] [--corpus 900] [--seq 64] [--variants ...]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import model, run_worker
from bench_eval import DIMS, KS, irset
from bench_eval import worker as stock_worker

VARIANTS = ("stock", "torch", "torch-bf16", "onnx", "onnx-int8", "openvino", "openvino-bf16", "openvino-int8")
BATCH = 64
#: The modules each variant needs beyond the project's dependencies (onnx: the export; nncf: int8 for OpenVINO).
NEEDS = {
    "onnx": ("onnx", "onnxruntime"),
    "onnx-int8": ("onnx", "onnxruntime"),
    "openvino": ("onnx", "openvino"),
    "openvino-bf16": ("onnx", "openvino"),
    "openvino-int8": ("onnx", "openvino", "nncf"),
}


def export_onnx(seq: int, folder: Path) -> Path:
    """The model's transformer as ONNX (the torchscript exporter; no optimum needed), batch and length dynamic."""
    import torch

    m = model(seq)
    bert = m[0].model.eval()

    class Hidden(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            out = self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
            return out.last_hidden_state

    feats = m.preprocess(["an example to trace", "another"])
    names = ["input_ids", "attention_mask", "token_type_ids"]
    path = folder / "model.onnx"
    with torch.no_grad():
        torch.onnx.export(
            Hidden(),
            tuple(feats[n] for n in names),
            str(path),
            input_names=names,
            output_names=["last_hidden_state"],
            dynamic_axes={**{n: {0: "batch", 1: "seq"} for n in names}, "last_hidden_state": {0: "batch", 1: "seq"}},
            opset_version=17,
            dynamo=False,
        )
    return path


def calibration_texts(n_queries: int, n_corpus: int) -> list[str]:
    return list(irset(n_queries, n_corpus).corpus.values())[:64]


def prepare(kind: str, seq: int, folder: Path, n_queries: int, n_corpus: int) -> Path:
    """Export (and quantise) the model for ``kind``; returns the file the worker loads."""
    onnx_path = folder / "model.onnx"
    if not onnx_path.exists():
        export_onnx(seq, folder)
    if kind == "onnx-int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        out = folder / "model-int8.onnx"
        quantize_dynamic(str(onnx_path), str(out), weight_type=QuantType.QInt8)
        return out
    if kind == "openvino-int8":
        import nncf
        import openvino as ov

        m = model(seq)
        samples = [
            {
                k: v.numpy()
                for k, v in m.preprocess([t]).items()
                if k in ("input_ids", "attention_mask", "token_type_ids")
            }
            for t in calibration_texts(n_queries, n_corpus)
        ]
        q = nncf.quantize(
            ov.Core().read_model(str(onnx_path)),
            nncf.Dataset(samples),
            model_type=nncf.ModelType.TRANSFORMER,
            subset_size=len(samples),
        )
        out = folder / "model-int8.xml"
        ov.save_model(q, str(out))
        return out
    return onnx_path


class BackendEncoder:
    """What ``eft_trainer.evaluation.encode`` needs of a model: ``encode``, with the model's tokenizer and mean
    pooling around an ONNX Runtime or OpenVINO session. Texts are encoded longest first, as sentence-transformers
    does, so a batch pads little."""

    def __init__(self, kind: str, path: Path, seq: int) -> None:
        self.st = model(seq)
        self.names = ["input_ids", "attention_mask", "token_type_ids"]
        if kind.startswith("onnx"):
            import onnxruntime as ort

            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            self.run = lambda feeds: session.run(None, feeds)[0]
        else:
            import openvino as ov

            # OpenVINO's CPU plugin computes in bf16 by default where the CPU has bf16 instructions: ask for
            # f32 unless the variant is the bf16 one (the int8 one keeps its default for what is not int8).
            hint = {"openvino": {"INFERENCE_PRECISION_HINT": "f32"}}.get(kind, {})
            compiled = ov.Core().compile_model(str(path), "CPU", hint)
            self.run = lambda feeds: compiled(feeds)[0]

    def encode(self, texts: list[str], batch_size: int = BATCH, **_: Any) -> np.ndarray:
        order = np.argsort([-len(t) for t in texts], kind="stable")
        out = np.zeros((len(texts), self.st.get_embedding_dimension()), dtype=np.float32)
        for start in range(0, len(texts), batch_size):
            idx = order[start : start + batch_size]
            feats = self.st.preprocess([texts[i] for i in idx])
            feeds = {n: feats[n].numpy() for n in self.names}
            hidden = np.asarray(self.run(feeds), dtype=np.float32)
            mask = feeds["attention_mask"][..., None].astype(np.float32)
            out[idx] = (hidden * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)
        return out


def worker(kind: str, n_queries: int, n_corpus: int, seq: int, path: str) -> None:
    if kind == "stock":
        stock_worker("stock", n_queries, n_corpus, seq)
        return
    from eft_trainer.evaluation import evaluate_model

    encoder: Any = BackendEncoder(kind, Path(path), seq) if kind.startswith("o") else model(seq)
    if kind == "torch-bf16":
        encoder = encoder.bfloat16()
    ir = irset(n_queries, n_corpus)
    encoder.encode(["warm up"] * 4)
    t0 = time.perf_counter()
    res = evaluate_model(encoder, ir, DIMS, KS, batch_size=BATCH)
    seconds = time.perf_counter() - t0
    metrics = {str(d): v for d, v in res.metrics.items()}
    print(json.dumps({"seconds": seconds, "encode_seconds": res.encode_seconds, "metrics": metrics}))


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--worker", nargs=5, metavar=("KIND", "Q", "C", "SEQ", "PATH"))
    p.add_argument("--queries", type=int, default=150)
    p.add_argument("--corpus", type=int, default=900)
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--variants", default=",".join(VARIANTS))
    a = p.parse_args()
    if a.worker:
        worker(a.worker[0], int(a.worker[1]), int(a.worker[2]), int(a.worker[3]), a.worker[4])
        return 0
    kinds = [k for k in a.variants.split(",") if k]
    missing = {k: needs for k in kinds for needs in NEEDS.get(k, ()) if importlib.util.find_spec(needs) is None}
    for kind, needs in missing.items():
        print(f"  {kind:14}: skipped, {needs} is not installed (see this script's docstring)")
    kinds = [k for k in kinds if k not in missing]
    results: dict[str, dict[str, Any]] = {}
    prep: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in kinds:
            path = Path(tmp)
            if kind.startswith("o"):
                t0 = time.perf_counter()
                path = prepare(kind, a.seq, Path(tmp), a.queries, a.corpus)
                prep[kind] = time.perf_counter() - t0
            results[kind] = run_worker(__file__, kind, str(a.queries), str(a.corpus), str(a.seq), str(path))
            print(f"  {kind:14}: {results[kind]['seconds']:.1f}s", flush=True)
    print(
        f"bench_eval_backends: MiniLM, {a.queries} queries, corpus {a.corpus}, seq {a.seq}, dims {DIMS}, k {KS}, "
        f"batch {BATCH}, CPU, load average {os.getloadavg()[0]:.1f} at the end"
    )
    stock = results.get("stock")
    ref = results.get("torch")
    for kind, r in results.items():
        line = f"  {kind:14}: {r['seconds']:.1f}s"
        if "encode_seconds" in r:
            line += f" (encoding {r['encode_seconds']:.1f}s)"
        if stock:
            line += f", ratio to stock {r['seconds'] / stock['seconds']:.3f} (target 0.15)"
        if ref:
            line += f", to fp32 torch {r['seconds'] / ref['seconds']:.3f}"
        if ref and kind != "stock":
            worst = max(
                abs(r["metrics"][d][m] - ref["metrics"][d][m]) for d in ref["metrics"] for m in ref["metrics"][d]
            )
            line += (
                f", largest metric difference to fp32 torch {worst:.1e} ({'within' if worst <= 1e-3 else 'OVER'} 1e-3)"
            )
        if kind in prep:
            what = "quantisation" if "int8" in kind else "ONNX export" if kind == "onnx" else "conversion"
            line += f"; {what} {prep[kind]:.1f}s before (the ONNX export is made once, by the first variant)"
        print(line)
    print("  GPU bf16: not measured (no GPU in this session)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
