"""The data probe (``python -m eft_trainer.probe``): does the data of a spec differ from last time?

The operator never reads Secrets, so it cannot list a tenant's bucket itself: for ``spec.retrain.onDataChange``
it starts this small Job in the resource's namespace, with the run's credentials and the run config
(``EFT_RUN_CONFIG``). It lists every data URI of the spec (train or documents, eval, guards, pretrain data),
writes a digest of the keys, sizes and ETags (:func:`eft_api.retrain.data_digest`) to its termination message
as an :class:`eft_api.retrain.ProbeReport`, and exits 0; a failure (access denied, no such bucket, S3 down)
is a report with the reason and message (never a credential) and the trainer's exit code for it.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from eft_api.contract import EXIT_CODE_OF_REASON, TERMINATION_LOG, TERMINATION_LOG_ENV, ExitCode, Reason, RunConfig
from eft_api.retrain import ProbeReport, data_digest, data_uris
from eft_trainer.config import load_run_config
from eft_trainer.errors import TrainerError, redact
from eft_trainer.storage import S3Uri, Store, open_store

log = logging.getLogger("eft_trainer.probe")


def probe(cfg: RunConfig, storage: Store) -> ProbeReport:
    """List every data URI of the spec; the digest of the listing."""
    listing = {uri: storage.list_objects_meta(S3Uri.parse(uri)) for uri in data_uris(cfg.spec)}
    objects = [o for found in listing.values() for o in found]
    return ProbeReport(
        outcome="Succeeded",
        reason=Reason.SUCCEEDED,
        message=f"listed {len(objects)} objects under {len(listing)} data URIs",
        digest=data_digest(listing),
        objects=len(objects),
        bytes=sum(size for _, size, _ in objects),
    )


def run(cfg: RunConfig) -> tuple[ProbeReport, int]:
    try:
        report = probe(cfg, open_store(cfg.spec.storage, os.environ))
    except TrainerError as exc:
        return ProbeReport(outcome="Failed", reason=exc.reason, message=exc.message), int(
            EXIT_CODE_OF_REASON[exc.reason]
        )
    except Exception as exc:  # a bug: say what, never a credential
        message = redact(f"the data probe crashed: {type(exc).__name__}: {exc}")[:2000]
        return ProbeReport(outcome="Failed", reason=Reason.CRASHED, message=message), int(ExitCode.CRASHED)
    return report, int(ExitCode.SUCCEEDED)


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_run_config()
    except TrainerError as exc:
        report, code = ProbeReport(outcome="Failed", reason=exc.reason, message=exc.message), 2
    else:
        report, code = run(cfg)
    text = report.model_dump_json(exclude_none=True)
    try:
        Path(os.environ.get(TERMINATION_LOG_ENV, TERMINATION_LOG)).write_text(text)
    except OSError:
        log.warning("could not write the termination message")
    log.info("data probe %s: %s %s", report.outcome, report.reason, report.message)
    return code


if __name__ == "__main__":
    sys.exit(main())
