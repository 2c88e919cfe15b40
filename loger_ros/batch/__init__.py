"""``loger-batch``: map many recordings (bags, image folders, videos) on a Ray cluster or locally.

One Ray actor call per input runs the code of ``loger-replay`` (bags) or ``loger-reconstruct``
(image folders, videos) on a pool of long-lived workers that keep their model, into ``OUT/<input name>/``, through a temporary folder renamed when complete. A
manifest (``OUT/manifest.json``) keyed by input path + size + mtime + parameters + model hash makes a
rerun skip what is done. Failed tasks are retried, then reported in ``OUT/summary.json`` / ``.csv``.

Only :mod:`loger_ros.batch.runner` and :mod:`loger_ros.batch.cli` (at run time) import Ray, which is
the optional extra ``batch`` (``pip install .[batch]``); nothing else in the package does.
"""
import importlib

# Names resolve on first use: `loger-batch --help` (loger_ros.batch.cli) must not pay for jobs'
# torch import through this package.
_LAZY = {
    "BatchInput": "inputs", "BatchInputError": "inputs", "collect_inputs": "inputs",
    "JobResult": "jobs", "JobSpec": "jobs", "run_job": "jobs",
    "Manifest": "manifest", "input_fingerprint": "manifest", "job_key": "manifest", "model_identity": "manifest",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BatchInput",
    "BatchInputError",
    "JobResult",
    "JobSpec",
    "Manifest",
    "collect_inputs",
    "input_fingerprint",
    "job_key",
    "model_identity",
    "run_job",
]
