"""A small process pool for runs over many files: bounded, crash-tolerant, interruptible.

Used by ``glmix-viz --workers`` (figures and their files) and ``glmix-wsss
pseudo-labels --workers`` (post-processing and writes; :mod:`wsss._workers`
re-exports it). Imports neither torch nor matplotlib: the tasks do.

:class:`WorkerPool` runs ``task(state, payload)`` in ``workers`` processes
(``spawn`` context: safe with torch and CUDA in the parent), each started with
``state = init(*init_args)``; what a task returns (if not ``None``) comes back
pickled, :meth:`WorkerPool.pop_value`. It differs from
:class:`concurrent.futures.ProcessPoolExecutor` where a long run over files
needs it to:

- **Bounded**: each worker holds at most ``per_worker`` tasks (one running,
  the rest queued), so at most ``workers * per_worker`` payloads are in
  flight; :meth:`WorkerPool.submit` waits for a free place.
- **Crash-tolerant**: a task that raises is reported failed with its error; a
  worker that dies (a segfault, the OOM killer) fails only the task it was
  running, and is replaced; its queued tasks go to the others.
- **Interruptible**: workers start with SIGINT blocked (a terminal's Ctrl-C
  reaches the whole process group; the parent alone decides). On
  :meth:`WorkerPool.terminate` each gets SIGTERM, which raises in the task so
  that files being written atomically are removed, then exits; one that does
  not within a timeout is killed. A worker whose parent died stops by itself
  (at once on Linux: the parent's death sends it SIGTERM).

Each worker has its own task queue and result pipe, so a dying worker cannot
leave a shared queue locked, and the parent always knows which task it held.
Payloads and keys are pickled (numpy arrays and plain records; a torch tensor
would travel as shared memory, one file descriptor each).
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import signal
from collections import deque
from multiprocessing.connection import wait
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

from .memory import reuse_freed_memory

__all__ = ["WorkerPool", "TaskResult", "PoolStartError", "usable_cores"]

_logger = logging.getLogger(__name__)

#: ``(key, error)``: a finished task, ``error`` ``None`` when it succeeded, else a one-line description.
TaskResult = Tuple[Any, Optional[str]]

_READY = "__ready__"


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask; ``os.cpu_count()`` where there is none)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class PoolStartError(RuntimeError):
    """A worker process died before it was ready (its ``init`` failed): the pool is stopped."""


class _Terminated(BaseException):
    """Raised in a worker by SIGTERM: unwinds the task (its ``finally`` and ``except BaseException`` run)."""


def _on_sigterm(signum, frame) -> None:
    raise _Terminated()


def _die_with_parent() -> None:
    """On Linux, ask for SIGTERM when the parent dies (``PR_SET_PDEATHSIG``): a parent killed without
    stopping its workers (SIGKILL, the OOM killer) then stops a running task at once, not after it."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the queue's timeout below notices a dead parent
        pass


def _worker_main(tasks, results, init: Callable, init_args: tuple, task: Callable) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _on_sigterm)
    _die_with_parent()
    reuse_freed_memory()
    parent = multiprocessing.parent_process()
    if parent is not None and not parent.is_alive():
        return  # it died before the request above
    try:
        state = init(*init_args)
        results.send((_READY, None, None))
        while True:
            try:
                item = tasks.get(timeout=1.0)
            except queue.Empty:
                if parent is not None and not parent.is_alive():
                    return  # orphaned: the parent was killed without stopping us
                continue
            if item is None:
                return
            key, payload = item
            try:
                value = task(state, payload)
            except Exception as err:  # the task failed, the worker goes on
                results.send((key, f"{type(err).__name__}: {err}", None))
            else:
                results.send((key, None, value))
    except (_Terminated, BrokenPipeError, EOFError):
        return


class _Worker:
    def __init__(self, ctx, init: Callable, init_args: tuple, task: Callable, name: str) -> None:
        self.tasks = ctx.Queue()
        self.results, sender = ctx.Pipe(duplex=False)
        self.process = ctx.Process(target=_worker_main, args=(self.tasks, sender, init, init_args, task),
                                   daemon=True, name=name)
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})  # inherited by the child
        try:
            self.process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        sender.close()
        self.ready = False
        self.held: Deque[Tuple[Any, Any]] = deque()  # (key, payload) sent, in the order it runs them


class WorkerPool:
    """``workers`` processes running ``task(state, payload)``; see the module docstring.

    Args:
        workers: number of processes (>= 1).
        init: called once in each worker with ``init_args``; returns its ``state``.
            Module-level functions (the ``spawn`` context pickles them by name).
        task: ``task(state, payload)``; an exception fails that task only; a value it returns is kept for
            :meth:`pop_value` (pickled back: keep it small).
        per_worker: tasks one worker holds at most (running and queued).
        name: the worker processes' name (``multiprocessing``'s, seen in logs and errors).

    Use as a context manager: leaving the ``with`` normally waits for the
    tasks in flight and stops the workers; leaving it by an exception
    (``KeyboardInterrupt`` too) terminates them at once.
    """

    def __init__(self, workers: int, init: Callable, init_args: tuple, task: Callable,
                 per_worker: int = 2, name: str = "pool-worker") -> None:
        if workers < 1 or per_worker < 1:
            raise ValueError(f"WorkerPool needs workers >= 1 and per_worker >= 1, got {workers} and "
                             f"{per_worker}")
        self._ctx = multiprocessing.get_context("spawn")
        self._spec = (init, init_args, task, name)
        self.per_worker = per_worker
        self._workers: List[_Worker] = [_Worker(self._ctx, *self._spec) for _ in range(workers)]
        self._finished: List[TaskResult] = []
        self._values: Dict[Any, Any] = {}
        self._requeue: Deque[Tuple[Any, Any]] = deque()
        self._stopped = False

    def __enter__(self) -> "WorkerPool":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.terminate()

    @property
    def in_flight(self) -> int:
        """Tasks submitted and not finished."""
        return sum(len(w.held) for w in self._workers) + len(self._requeue)

    def in_flight_keys(self) -> List[Any]:
        return [key for w in self._workers for key, _ in w.held] + [key for key, _ in self._requeue]

    def submit(self, key: Any, payload: Any) -> None:
        """Queue ``payload``; waits (collecting results) while every worker holds ``per_worker`` tasks."""
        if self._stopped:
            raise RuntimeError("the pool is stopped")
        self._requeue.append((key, payload))
        self._dispatch()
        while self._requeue:
            self._collect(timeout=None)
            self._dispatch()

    def pop_value(self, key: Any) -> Any:
        """What the finished task ``key`` returned (``None`` if nothing, or already popped)."""
        return self._values.pop(key, None)

    def results(self, timeout: Optional[float] = 0.0) -> List[TaskResult]:
        """The tasks finished since the last call; waits up to ``timeout`` s (``None``: until one is)
        when none has and some are in flight."""
        if not self._finished and self.in_flight and not self._stopped:
            self._collect(timeout)
            self._dispatch()
        done, self._finished = self._finished, []
        return done

    def _dispatch(self) -> None:
        while self._requeue:
            free = [w for w in self._workers if len(w.held) < self.per_worker]
            if not free:
                return
            worker = min(free, key=lambda w: len(w.held))
            key, payload = self._requeue.popleft()
            worker.held.append((key, payload))
            worker.tasks.put((key, payload))

    def _collect(self, timeout: Optional[float]) -> None:
        """Read what the workers sent; replace dead workers."""
        by_conn = {w.results: w for w in self._workers}
        by_sentinel = {w.process.sentinel: w for w in self._workers}
        ready = wait([*by_conn, *by_sentinel], timeout)
        for worker in {id(w): w for w in (by_conn.get(r) or by_sentinel[r] for r in ready)}.values():
            self._read(worker)
            if not worker.process.is_alive():
                self._replace(worker)

    def _read(self, worker: _Worker) -> None:
        try:
            while worker.results.poll():
                key, error, value = worker.results.recv()
                if key == _READY:
                    worker.ready = True
                    continue
                done_key, _ = worker.held.popleft()
                assert done_key == key, (done_key, key)  # a worker runs its tasks in order
                if value is not None:
                    self._values[key] = value
                self._finished.append((key, error))
        except (EOFError, OSError):
            pass  # it died; _collect replaces it

    def _replace(self, worker: _Worker) -> None:
        worker.process.join()
        code = worker.process.exitcode
        if not worker.ready:
            self.terminate()
            raise PoolStartError(f"a worker process could not start (exit code {code}); see the errors above")
        held = list(worker.held)
        worker.held.clear()
        if held:
            key, _ = held[0]
            self._finished.append((key, f"the worker process died (exit code {code})"))
            self._requeue.extendleft(reversed(held[1:]))
        _logger.warning("a worker process died (exit code %s); starting another", code)
        worker.tasks.cancel_join_thread()
        worker.tasks.close()
        worker.results.close()
        self._workers[self._workers.index(worker)] = _Worker(self._ctx, *self._spec)

    def wait_all(self) -> List[TaskResult]:
        """Wait for every task in flight; their results."""
        done: List[TaskResult] = []
        while (self.in_flight and not self._stopped) or self._finished:
            done += self.results(timeout=None)
        return done

    def close(self, timeout: float = 30.0) -> None:
        """Stop the workers once they have nothing left (call :meth:`wait_all` first to keep results)."""
        for worker in self._workers:
            if worker.process.is_alive():
                try:
                    worker.tasks.put(None)
                except (ValueError, OSError):
                    pass
        for worker in self._workers:
            worker.process.join(timeout)
        self.terminate()  # any that did not stop

    def terminate(self, timeout: float = 10.0) -> None:
        """Stop every worker now: SIGTERM (a running task unwinds and removes its temporary files), then
        SIGKILL for one still running after ``timeout`` s. Idempotent."""
        self._stopped = True
        for worker in self._workers:
            if worker.process.is_alive():
                worker.process.terminate()
        for worker in self._workers:
            worker.process.join(timeout)
            if worker.process.is_alive():
                _logger.warning("a worker process did not stop in %g s: killed", timeout)
                worker.process.kill()
                worker.process.join()
            worker.tasks.cancel_join_thread()
            worker.tasks.close()
            worker.results.close()

    def pids(self) -> Dict[int, bool]:
        """Each worker's process id and whether it is alive."""
        return {w.process.pid: w.process.is_alive() for w in self._workers}
