"""The process pool of ``pseudo-labels --workers``: :class:`glmix_viz._pool.WorkerPool`, kept here by name.

The pool lives in :mod:`glmix_viz._pool` (``glmix-viz --workers`` uses it too,
and ``glmix_viz`` never imports ``wsss``); see its docstring.
"""
from glmix_viz._pool import PoolStartError, TaskResult, WorkerPool

__all__ = ["WorkerPool", "TaskResult", "PoolStartError"]
