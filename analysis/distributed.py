"""Ray for the batch verbs: an actor pool with one model replica per worker (one GPU per worker when the
cluster has GPUs), fed the chunks of a batch job (analysis.store.ChunkJob) one at a time.

The driver keeps the study store: ``run_batch`` stores each chunk as soon as a worker returns it, so work
that finished survives an interruption and a rerun skips it. A chunk whose worker died (a crash, an
out-of-memory kill, a lost node) is retried on a fresh worker, at most ``max_retries`` times. Workers get
exactly the chunks a single-process run computes, so the stored values are identical.

Ray is an optional extra (``pip install 'erasure-workbench[ray]'``) and imported only when a pool starts.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections import OrderedDict, deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import ModuleType
from typing import Any

from analysis.errors import AnalysisInputError, WorkbenchError
from analysis.store import ChunkJob, ChunkResults, Compute

RAY_MISSING = "--ray needs the ray extra: pip install 'erasure-workbench[ray]'"
LOCAL = "local"  # --ray without an address: start a local Ray instance
MAX_RETRIES = 2  # fresh workers a chunk may get after the one running it died
CACHED_JOBS = 4  # computes a worker keeps built (a recovery report runs ~20 jobs over 3 models)
DEFAULT_CPU_WORKERS = 2


def import_ray() -> ModuleType:
    try:
        import ray
    except ImportError:
        raise WorkbenchError(RAY_MISSING) from None
    return ray


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:300]


class ChunkWorker:
    """A Ray actor's state: the studies it opened (each caching its loaded models: one replica of each
    model per worker) and the last few jobs' compute functions, built once per job."""

    def __init__(self, threads: int, n_devices: int) -> None:
        import torch

        torch.set_num_threads(max(1, threads))  # N workers on one machine must not oversubscribe its cores
        self.n_devices = n_devices
        self._studies: dict[str, Any] = {}
        self._computes: OrderedDict[str, Compute] = OrderedDict()

    def pid(self) -> int:
        return os.getpid()

    def run(self, key: str, job: ChunkJob, chunk: list[str]) -> dict[str, Any]:
        compute = self._computes.get(key)
        if compute is None:
            compute = job.build(self._study(job.root))
            self._computes[key] = compute
            while len(self._computes) > CACHED_JOBS:
                self._computes.popitem(last=False)
        self._computes.move_to_end(key)
        return compute(chunk)

    def _study(self, root: str) -> Any:
        if root not in self._studies:
            from analysis.study import Study

            study = Study.open(root)
            study.n_devices = self.n_devices
            self._studies[root] = study
        return self._studies[root]


def check_address(address: str) -> None:
    """Fail in a second, with one line, on an address nothing listens at (ray.init would retry for minutes)."""
    if address == "auto":
        return
    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise AnalysisInputError(f"--ray expects host:port, ray://host:port or auto, got {address!r}")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as e:
        raise WorkbenchError(f"cannot reach a Ray cluster at {address} ({e.strerror or e})") from None


class RayExecutor:
    """An executor for ``analysis.store.run_batch`` on a pool of Ray actors.

    ``address``: None starts a local Ray instance (shut down again by :meth:`close`); "auto",
    "host:port" or "ray://host:port" connects to a running cluster (a Ray instance already initialised in
    this process is used as it is). ``workers``: actors, each holding its own model replicas (default: one
    per GPU of the cluster, else 2). ``n_devices``: GPUs per worker, for models split over several GPUs
    (TransformerLens ``n_devices``). The pool starts on the first chunk to compute, so a fully stored job
    never starts Ray, and is reused by every job of a verb until :meth:`close`.
    """

    def __init__(self, address: str | None = None, workers: int | None = None, n_devices: int = 1,
                 max_retries: int = MAX_RETRIES, threads: int = 1) -> None:
        if workers is not None and workers < 1:
            raise AnalysisInputError(f"--workers must be at least 1, got {workers}")
        if n_devices < 1:
            raise AnalysisInputError(f"--n-devices must be at least 1, got {n_devices}")
        if max_retries < 0:
            raise AnalysisInputError(f"max_retries must be >= 0, got {max_retries}")
        self.address, self.n_devices, self.max_retries, self.threads = address, n_devices, max_retries, threads
        self.workers = workers
        self.use_gpu = False
        self.retried = 0  # chunks resubmitted after a worker died (for reports and tests)
        self._started_ray = False
        self._actor_cls: Any = None
        self._actors: list[Any] = []

    # ---- pool --------------------------------------------------------------------------------------
    def start(self) -> None:
        """Connect to (or start) Ray and create the actors; idempotent."""
        ray = import_ray()
        if not ray.is_initialized():
            self._init(ray)
        if self._actor_cls is None:
            gpus = int(ray.cluster_resources().get("GPU", 0))
            self.use_gpu = gpus >= self.n_devices
            if self.n_devices > 1 and not self.use_gpu:
                raise WorkbenchError(f"--n-devices {self.n_devices} needs {self.n_devices} GPUs per worker; the "
                                     f"Ray cluster has {gpus}")
            if self.workers is None:
                self.workers = gpus // self.n_devices if self.use_gpu else DEFAULT_CPU_WORKERS
            self._check_capacity(ray, gpus)
            opts: dict[str, Any] = {"num_cpus": self.threads, "max_restarts": 0, "scheduling_strategy": "SPREAD"}
            if self.use_gpu:
                opts["num_gpus"] = self.n_devices
            self._actor_cls = ray.remote(ChunkWorker).options(**opts)
        assert self.workers is not None
        self._actors += [None] * (self.workers - len(self._actors))
        for i, actor in enumerate(self._actors):
            if actor is None:
                self._actors[i] = self._actor_cls.remote(self.threads, self.n_devices)

    def _init(self, ray: ModuleType) -> None:
        kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}
        if self.address is None:
            import torch

            local_gpus = torch.cuda.device_count()
            n = self.workers or (local_gpus // self.n_devices if local_gpus >= self.n_devices
                                 else DEFAULT_CPU_WORKERS)
            ray.init(num_cpus=max(1, n) * self.threads, **kw)
            self._started_ray = True
            return
        check_address(self.address)
        try:
            ray.init(address=self.address, **kw)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise WorkbenchError(f"cannot connect to the Ray cluster at {self.address}: {_first_line(e)}") from None

    def _check_capacity(self, ray: ModuleType, gpus: int) -> None:
        assert self.workers is not None
        if self.workers < 1:
            raise WorkbenchError("the Ray cluster has no room for a worker")
        cpus = int(ray.cluster_resources().get("CPU", 0))
        if self.use_gpu and self.workers * self.n_devices > gpus:
            raise WorkbenchError(f"--workers {self.workers} needs {self.workers * self.n_devices} GPUs; the Ray "
                                 f"cluster has {gpus}")
        if self.workers * self.threads > cpus:
            raise WorkbenchError(f"--workers {self.workers} needs {self.workers * self.threads} CPUs; the Ray "
                                 f"cluster has {cpus}")

    def worker_pids(self) -> list[int]:
        """The process id of every worker (starting the pool if needed)."""
        self.start()
        return list(import_ray().get([a.pid.remote() for a in self._actors]))

    def _discard(self, i: int) -> None:
        """Kill worker ``i`` (dead or busy with work nobody waits for); :meth:`start` makes a fresh one."""
        if self._actors[i] is not None:
            import_ray().kill(self._actors[i])
            self._actors[i] = None

    def close(self) -> None:
        """Stop the workers (and the Ray instance, if this executor started it)."""
        if not self._actors and not self._started_ray:
            return
        ray = import_ray()
        for actor in self._actors:
            if actor is not None:
                ray.kill(actor)
        self._actors = []
        if self._started_ray:
            ray.shutdown()
            self._started_ray = False
            self._actor_cls = None

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- jobs --------------------------------------------------------------------------------------
    def map(self, job: ChunkJob, chunks: Sequence[list[str]]) -> ChunkResults:
        """Yield ``(chunk, values)`` as workers finish, one chunk per idle worker at a time."""
        if not chunks:
            return
        ray = import_ray()
        from ray.exceptions import RayActorError, RayTaskError

        self.start()
        key, job_ref = uuid.uuid4().hex, ray.put(job)
        queue: deque[tuple[list[str], int]] = deque((list(c), 0) for c in chunks)
        running: dict[Any, tuple[int, list[str], int]] = {}
        idle = list(range(len(self._actors)))[::-1]
        try:
            while queue or running:
                while queue and idle:
                    i = idle.pop()
                    chunk, tries = queue.popleft()
                    running[self._actors[i].run.remote(key, job_ref, chunk)] = (i, chunk, tries)
                ready, _ = ray.wait(list(running), num_returns=1)
                i, chunk, tries = running.pop(ready[0])
                try:
                    values = ray.get(ready[0])
                except RayActorError as e:
                    self._discard(i)
                    if tries >= self.max_retries:
                        raise WorkbenchError(f"the chunk starting at sample {chunk[0]!r} failed: its Ray worker "
                                             f"died on all {tries + 1} attempts ({_first_line(e)})") from None
                    self.start()
                    self.retried += 1
                    queue.appendleft((chunk, tries + 1))
                    idle.append(i)
                    continue
                except RayTaskError as e:  # the analysis raised: the same error as a local run
                    cause = getattr(e, "cause", None)
                    if isinstance(cause, Exception):
                        raise cause from None
                    raise
                idle.append(i)
                yield chunk, values
        finally:
            for i, _, _ in running.values():  # interrupted: stop what is still running
                self._discard(i)


@contextmanager
def ray_executor(ray: str | None, workers: int | None = None, n_devices: int = 1,
                 batch: bool = True) -> Iterator[RayExecutor | None]:
    """A Ray executor for one job (None when ``ray`` is None), closed when the job ends. ``ray``: LOCAL for a
    local instance, else a cluster address. ``batch`` False: the job runs one sample, which Ray cannot speed
    up."""
    if ray is None:
        if workers is not None:
            raise AnalysisInputError("--workers needs --ray")
        yield None
        return
    if not batch:
        raise AnalysisInputError("--ray runs batch jobs (e.g. --all), not one sample")
    import_ray()
    if ray != LOCAL:
        check_address(ray)
    executor = RayExecutor(address=None if ray == LOCAL else ray, workers=workers, n_devices=n_devices)
    try:
        yield executor
    finally:
        executor.close()
