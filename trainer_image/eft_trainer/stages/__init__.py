"""The trainer as a pipeline of stages, each a module with typed input and output.

source (fetch, or generate from documents) -> check (load, preflight, split) -> measure the base model ->
pretrain (optional) -> augment (mining, silver labels) -> train (the method, the out-of-memory fallback) ->
measure the result -> gate -> report -> publish -> outcome (termination message, exit code).

A :class:`~eft_trainer.stages.context.RunContext` carries what every stage needs (config, storage, work dir,
rank, progress, timings); its ``stage(name)`` owns the phase, the progress gauge and the timing, so no stage
repeats that bookkeeping. :func:`eft_trainer.entrypoint.run_job` only lists the stages.
"""
