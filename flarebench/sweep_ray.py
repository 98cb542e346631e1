"""Sweeps on a Ray cluster (``flarebench sweep CONFIG --ray ADDRESS``): every run of the grid is one Ray task.

The driver plans the grid with :func:`flarebench.sweep.pending` (the local sweep's skip / resume /
restart / run, and its refusal of a run made with another config, before anything starts), submits
one task per run to do, reports progress and returns the runs' summaries; the caller compares them.

Run directories are written by the workers, in place: ``OUT`` (and the driver's working directory,
against which a relative ``OUT`` is resolved) must be on a filesystem that every node mounts at the
same path. A task checks this first and fails with one line if it does not hold.

A task whose worker dies (SIGKILL, out of memory, node lost) is retried up to ``max_retries`` times;
the retry asks :func:`flarebench.sweep.action_for` again, so it resumes the run from its last
checkpoint (or only reports it, if it had completed). An error raised by the run itself is not
retried: the run is reported failed, the others go on, and the sweep raises at the end.

Each run uses ``cpus_per_run`` torch threads; its metrics.csv equals a local run's made with the same
number of threads on the same kind of CPU (thread count changes float summation order).

Ray is imported only here and only when a sweep asks for it: flarebench works without it.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
import warnings
from pathlib import Path
from typing import Callable

from .config import RunConfig
from .errors import ConfigError, ResultsError
from .sweep import Sweep, action_for, execute, pending

MAX_RETRIES = 3  # retries of a run whose worker died; each resumes from the run's checkpoint
POLL_S = 0.2  # seconds between progress checks of the driver
CONNECT_TIMEOUT_S = 5.0  # seconds to wait for the cluster's address to answer before giving up


def import_ray():
    """The ``ray`` module, or ConfigError with the install command."""
    try:
        import ray
    except ImportError:
        raise ConfigError('--ray needs the ray extra: pip install -e ".[ray]"') from None
    return ray


class Progress:
    """Ray actor (0 CPUs): tasks report here when they start; the driver collects the reports.

    Also counts the attempts per run, which tells a retried task that it is one.
    """

    def __init__(self) -> None:
        self.attempts: dict[str, int] = {}
        self.events: list[tuple[str, int, int, str]] = []

    def started(self, name: str, pid: int, node: str) -> int:
        """Record that run ``name`` starts in process ``pid`` on ``node``; returns its attempt number (1, 2, ...)."""
        n = self.attempts[name] = self.attempts.get(name, 0) + 1
        self.events.append((name, n, pid, node))
        return n

    def drain(self) -> list[tuple[str, int, int, str]]:
        """The ``(name, attempt, pid, node)`` reports since the last call."""
        out, self.events = self.events, []
        return out


def run_task(cfg: RunConfig, action: str, threads: int, cwd: str, marker: str, progress) -> dict:
    """The body of a run's Ray task, on a worker: check the shared filesystem, report the start,
    run (a retry plans again: resume), return :func:`flarebench.sweep.execute`'s summary plus
    ``attempt`` and ``node``."""
    import ray

    node = ray.util.get_node_ip_address()
    shared = "--ray needs OUT and the working directory on a filesystem shared by every node at the same path"
    if not os.path.isfile(marker):
        raise ConfigError(f"node {node} does not see {marker}: {shared}")
    try:
        os.chdir(cwd)  # a relative OUT or data-root means what it means on the driver
    except OSError:
        raise ConfigError(f"node {node} has no directory {cwd} (the driver's working directory): {shared}") from None
    attempt = ray.get(progress.started.remote(cfg.name, os.getpid(), node))
    if attempt > 1:  # the previous attempt's worker died: continue from its checkpoint
        action = action_for(cfg)
        if action == "skip":
            return {**summary_on_disk(cfg), "attempt": attempt, "node": node}
    return {**execute(cfg, action, threads), "attempt": attempt, "node": node}


def summary_on_disk(cfg: RunConfig) -> dict:
    """:func:`flarebench.sweep.execute`'s summary of a complete run, read from its directory."""
    from .results import load_run

    rec = load_run(Path(cfg.out) / cfg.name)
    m = rec.metrics
    acc = m["test_accuracy"].dropna()
    val = m["val_accuracy"].dropna() if "val_accuracy" in m else []
    return {"name": cfg.name, "action": "skip", "final_accuracy": float(acc.iloc[-1]) if len(acc) else None,
            "val_accuracy": float(val.iloc[-1]) if len(val) else None,
            "uplink_bits": int(m["cumulative_uplink_bits"].iloc[-1]),
            "wall_time_s": float(rec.meta.get("wall_time_s", m["wall_time_s"].iloc[-1]))}


def connect(ray, address: str) -> bool:
    """Join the cluster at ``address`` (``auto``, ``HOST:PORT`` or ``ray://HOST:PORT``); ConfigError if
    it cannot be reached. Returns whether this call connected (and so should disconnect).

    A ``HOST:PORT`` or ``ray://HOST:PORT`` address is probed first (:func:`probe_grpc`): ``ray.init``
    retries a port that is closed or serves something else for minutes."""
    if ray.is_initialized():
        return False
    if address != "auto":
        host, _, port = address.removeprefix("ray://").rpartition(":")
        if not host or not port.isdigit() or ("://" in address and not address.startswith("ray://")):
            raise ConfigError(f"--ray takes auto, HOST:PORT or ray://HOST:PORT, got {address!r}")
        probe_grpc(host, int(port), address)
    # Ray hides the GPUs from a task that asks for none, which flarebench relies on; it warns that this will change
    warnings.filterwarnings("ignore", message=".*RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", category=FutureWarning)
    try:
        with warnings.catch_warnings():  # Ray's notes to its own users (client/server versions, ...) are not flarebench's
            warnings.simplefilter("ignore", UserWarning)
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=True, runtime_env=worker_env())
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if address == "auto" and "could not find any running ray instance" in first.lower():
            # Ray's advice (its --address flag, RAY_ADDRESS) is not flarebench's: say ours
            raise ConfigError("--ray auto found no Ray cluster running on this machine: start one with "
                              "`ray start --head`, or give a cluster's address: --ray HOST:PORT") from None
        raise ConfigError(f"cannot join the Ray cluster at {address}: {first}") from None
    return True


def worker_env() -> dict:
    """The runtime environment of the sweep's tasks: the driver's PYTHONPATH, led by its working directory, so
    that workers import what the driver imports: a module reference (``my_pkg.nets:Net``) and installed
    plug-ins found on that path (their ``flarebench.parts`` entry points). File references are absolute
    paths in the config already; like OUT, they must be on the shared filesystem."""
    paths = [os.getcwd(), *[p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]]
    return {"env_vars": {"PYTHONPATH": os.pathsep.join(dict.fromkeys(paths))}}


H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])  # + an empty SETTINGS frame
H2_SETTINGS = 0x04  # frame type of the server's first frame


def probe_grpc(host: str, port: int, address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """ConfigError unless a gRPC server answers at ``host:port`` within ``timeout`` seconds: Ray's GCS and
    its client server speak gRPC (HTTP/2), whose server answers the HTTP/2 preface with a SETTINGS frame.
    A closed port, a silent one or another protocol (e.g. an HTTP/1 server) is one line, at once."""
    hint = "check the address (`ray status` on the head prints it) or start one with `ray start --head`"
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(H2_PREFACE)
            head = b""
            while len(head) < 9:
                chunk = sock.recv(9 - len(head))
                if not chunk:
                    break
                head += chunk
    except socket.timeout:
        raise ConfigError(f"no Ray cluster answers at {address} (nothing answered within {timeout:g} s); {hint}") from None
    except OSError as e:
        raise ConfigError(f"no Ray cluster answers at {address} ({e.strerror or e}); {hint}") from None
    if len(head) < 9 or head[3] != H2_SETTINGS:
        raise ConfigError(f"no Ray cluster answers at {address}: another service does, not in Ray's gRPC "
                          f"(its first bytes: {head[:9]!r}); {hint}")


def check_resources(ray, cpus: int, gpus: float) -> None:
    """ConfigError if no live node has ``cpus`` CPUs and ``gpus`` GPUs (the tasks would wait forever)."""
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    if any(r.get("CPU", 0) >= cpus and r.get("GPU", 0) >= gpus for r in nodes):
        return
    best = max((r.get("CPU", 0) for r in nodes), default=0)
    need = f"{cpus} CPUs" + (f" and {gpus:g} GPUs" if gpus else "")
    raise ConfigError(f"no node of the Ray cluster has {need} for a run (largest: {best:g} CPUs, "
                      f"{max((r.get('GPU', 0) for r in nodes), default=0):g} GPUs); lower --cpus-per-run / --gpus-per-run")


def gpus_for(cfg: RunConfig, gpus_per_run: float | None) -> float:
    """GPUs a run asks for: ``gpus_per_run`` if given (runs on cpu ask for none), else 1 for a cuda device, 0 otherwise."""
    if cfg.device == "cpu":
        return 0.0
    if gpus_per_run is not None:
        return float(gpus_per_run)
    return 1.0 if cfg.device.startswith("cuda") else 0.0


def run_sweep_ray(
    sweep: Sweep,
    address: str,
    cpus_per_run: int = 1,
    gpus_per_run: float | None = None,
    overwrite: bool = False,
    on_event: Callable[[str, RunConfig, dict | None], None] | None = None,
    max_retries: int = MAX_RETRIES,
) -> list[dict]:
    """Run the grid on the Ray cluster at ``address``, one task per run (``cpus_per_run`` CPUs and
    torch threads; GPUs: :func:`gpus_for`).

    ``on_event(kind, cfg, info)``: ``skip``; ``start`` when a task starts on a worker (info: ``action``,
    ``attempt``, ``pid``, ``node``; a retry has attempt > 1); ``done`` (execute's summary plus
    ``attempt``, ``node``); ``failed`` (info: ``error``, one line). Returns the summaries of the runs
    done; ResultsError at the end if any failed.
    """
    if not isinstance(cpus_per_run, int) or cpus_per_run < 1:
        raise ConfigError(f"--cpus-per-run must be an integer >= 1, got {cpus_per_run!r}")
    if gpus_per_run is not None and not gpus_per_run >= 0:
        raise ConfigError(f"--gpus-per-run must be >= 0, got {gpus_per_run!r}")
    ray = import_ray()
    todo = pending(sweep, overwrite, on_event)
    if not todo:
        return []
    own = connect(ray, address)
    refs: dict = {}
    marker = Path(sweep.out).expanduser().resolve() / f".flarebench-ray-{uuid.uuid4().hex}"
    try:
        check_resources(ray, cpus_per_run, max(gpus_for(c, gpus_per_run) for c, _ in todo))
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text("flarebench sweep --ray: workers check that they see this file (shared filesystem)\n")
        return _drive(ray, todo, cpus_per_run, gpus_per_run, str(marker), on_event, max_retries, refs)
    finally:
        for ref in refs:  # interrupted: stop the tasks still going (their runs resume next time)
            try:
                ray.cancel(ref, force=True)
            except Exception:  # already finished or the cluster is gone
                pass
        marker.unlink(missing_ok=True)
        if own:
            ray.shutdown()


def _drive(ray, todo, cpus, gpus_per_run, marker, on_event, max_retries, refs) -> list[dict]:
    """Submit ``todo`` and follow the tasks until all have finished (``refs``: the ones not finished)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=True)
    progress = ray.remote(Progress).options(num_cpus=0, scheduling_strategy=here).remote()
    task = ray.remote(run_task)
    actions = {cfg.name: action for cfg, action in todo}
    for cfg, action in todo:
        ref = task.options(num_cpus=cpus, num_gpus=gpus_for(cfg, gpus_per_run), max_retries=max_retries,
                           retry_exceptions=False, name=f"flarebench {cfg.name}").remote(
            cfg, action, cpus, os.getcwd(), marker, progress)
        refs[ref] = cfg
    by_name = {cfg.name: cfg for cfg, _ in todo}
    done, failed = [], []
    starts: list[tuple[str, int, int, str]] = []

    def report_starts(names: set[str]) -> None:  # in the order the tasks started
        for s in [s for s in starts if s[0] in names]:
            starts.remove(s)
            if on_event:
                name, attempt, pid, node = s
                on_event("start", by_name[name], {"action": actions[name] if attempt == 1 else "retry",
                                                  "attempt": attempt, "pid": pid, "node": node})

    while refs:
        ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=POLL_S)
        starts += ray.get(progress.drain.remote())
        for ref in ready:  # finished runs first: the runs that took their CPUs start after them
            cfg = refs.pop(ref)
            report_starts({cfg.name})
            try:
                info = ray.get(ref)
            except ray.exceptions.RayError as e:
                failed.append((cfg.name, _one_line(ray, e)))
                if on_event:
                    on_event("failed", cfg, {"error": failed[-1][1]})
                continue
            done.append(info)
            if on_event:
                on_event("done", cfg, info)
        report_starts(set(by_name))
    if failed:
        first = "; ".join(f"{n}: {msg}" for n, msg in failed[:3])
        raise ResultsError(f"{len(failed)} of {len(todo)} runs failed on the Ray cluster ({first}); "
                           "complete runs are kept, run the sweep again to retry the others")
    return done


def _one_line(ray, e: Exception) -> str:
    """A task's error in one line: a run's own error as it would read locally, a lost worker as Ray says it."""
    cause = getattr(e, "cause", None) if isinstance(e, ray.exceptions.RayTaskError) else None
    if cause is not None:
        from .errors import FlarebenchError

        text = str(cause) if isinstance(cause, FlarebenchError) else f"{type(cause).__name__}: {cause}"
    else:
        text = f"{type(e).__name__}: {e}"
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else type(e).__name__


__all__ = ["run_sweep_ray", "run_task", "Progress", "connect", "probe_grpc", "worker_env", "check_resources", "gpus_for", "import_ray", "MAX_RETRIES"]
