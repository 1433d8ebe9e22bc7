"""The shots of a batch as Ray tasks: local by default, or on an existing cluster.

* ``ray.init()`` without an address starts Ray on this machine with its cores (and GPUs) as
  resources; ``address="auto"`` or ``"ray://host:10001"`` / ``"host:6379"`` joins a cluster. The
  workers run the engine with the same Python (``engine_python``) and see the shots and the
  output folder at the same paths: on a cluster, a shared file system (docs/batch.md).
* One task per shot asks for ``cpus_per_job`` CPUs and ``gpus_per_job`` GPUs; Ray runs as many
  at once as the resources allow and sets ``CUDA_VISIBLE_DEVICES`` for each.
* Retries are ours, not Ray's (``max_retries=0``): a task that died with its worker (killed, out
  of memory, node lost) or a shot that failed in a way another try could fix is submitted again,
  up to ``retries`` more times; then it is recorded as failed and the batch goes on.
* A ``Board`` actor carries progress from the tasks to this driver. Cancel (SIGINT/SIGTERM to
  the driver) writes a flag file in the output folder (which every worker sees): the running
  shots stop their engines (a cancelled ``run`` keeps a partial result, marked so), the queued
  ones return at once; a second signal kills the tasks.
"""
from __future__ import annotations

import os
import signal
import time
from typing import Callable, Optional

from . import shot as shot_mod

LOCAL_OBJECT_STORE_BYTES = 256 << 20   # tasks pass small dicts: no need for Ray's 30 % of RAM
WAIT_S = 0.25
CONNECT_TIMEOUT_S = 5.0
RAY_REQUIREMENT = "ray==2.60.0"


class RayUnavailable(RuntimeError):
    """Ray is not installed, or the cluster cannot be reached."""


def import_ray():
    try:
        import ray
    except ImportError:
        raise RayUnavailable(f"Ray is not installed in the engine environment ({RAY_REQUIREMENT}, an optional "
                             "dependency): run 'python3 build.py setup --extras batch' in a checkout, or "
                             f"'pip install -r requirements/batch.txt' / 'pip install {RAY_REQUIREMENT}' with "
                             "the engine's Python") from None
    return ray


class Board:
    """Progress events from the tasks, drained by the driver (a Ray actor)."""

    def __init__(self):
        self.events = []

    def report(self, event: dict) -> None:
        self.events.append(event)

    def drain(self) -> list:
        out, self.events = self.events, []
        return out


def _task(plan: dict, board) -> dict:
    """The Ray task: one shot; progress to the board, fire and forget.

    It never calls ``ray.get`` or ``ray.wait``: Ray lends a task's CPUs to other tasks while it
    waits in them (even ``timeout=0``), which would start more shots than the resources allow.
    Cancel comes as a flag file in the output folder (``shot.cancel_requested``) instead."""
    def report(event: dict) -> None:
        board.report.remote(event)

    return shot_mod.run_shot(plan, report, lambda: shot_mod.cancel_requested(plan["out_dir"]))


def check_reachable(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """A ``host:port`` or ``ray://host:port`` address must accept a connection: Ray itself keeps
    retrying an unreachable one for minutes, deaf to Ctrl+C. Raises RayUnavailable."""
    import socket

    target = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        return   # "auto" and other forms: Ray resolves them itself, quickly
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise RayUnavailable(f"cannot reach the Ray cluster at {address} ({e.strerror or e}): is it running, "
                             "and is this the head node's address?") from None


def start(address: Optional[str], *, engine_parent: str, num_cpus: Optional[int] = None,
          num_gpus: Optional[float] = None):
    """Connect to ``address`` or start Ray here (``num_gpus``: the GPUs it may use here; None:
    those it finds). -> (ray module, description dict)."""
    ray = import_ray()
    if address and address != "local":
        check_reachable(address)
    env = {"PYTHONPATH": str(engine_parent)}  # the workers import engine.batch to run the task
    kwargs = dict(include_dashboard=False, log_to_driver=False, configure_logging=True, logging_level="WARNING",
                  runtime_env={"env_vars": env})
    try:
        if address and address != "local":
            ray.init(address=address, **kwargs)
        else:
            ray.init(num_cpus=num_cpus or os.cpu_count() or 1, num_gpus=num_gpus,
                     object_store_memory=LOCAL_OBJECT_STORE_BYTES, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise RayUnavailable(f"could not {'connect to the Ray cluster at ' + address if address and address != 'local' else 'start Ray here'}: "
                             f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    res = ray.cluster_resources()
    info = {"address": address or "local", "nodes": len([n for n in ray.nodes() if n.get("Alive")]),
            "cpus": res.get("CPU", 0), "gpus": res.get("GPU", 0)}
    return ray, info


def run_tasks(ray, plans: list, *, cpus_per_job: float, gpus_per_job: float, retries: int,
              on_event: Callable[[dict], None], on_outcome: Callable[[dict, dict], None],
              cancel: dict) -> None:
    """Run every plan as a task; ``on_outcome(plan, outcome)`` for each final outcome (after
    retries); ``cancel["flag"]`` (set by a signal handler) stops the batch."""
    board = ray.remote(num_cpus=0)(Board).remote()
    task = ray.remote(_task).options(num_cpus=cpus_per_job, num_gpus=gpus_per_job, max_retries=0)
    running = {}

    def submit(plan):
        running[task.remote(plan, board)] = plan

    for plan in plans:
        submit(dict(plan, attempt=1))
    flagged = killed = False
    try:
        while running:
            if cancel["flag"] and not flagged:
                shot_mod.request_cancel(plans[0]["out_dir"])
                flagged = True
            if cancel.get("force") and not killed:
                for ref in running:
                    ray.cancel(ref, force=True)
                killed = True
            ready, _ = ray.wait(list(running), num_returns=1, timeout=WAIT_S)
            for event in ray.get(board.drain.remote()):
                on_event(event)
            for ref in ready:
                plan = running.pop(ref)
                try:
                    outcome = ray.get(ref)
                except ray.exceptions.TaskCancelledError:
                    outcome = {"shot": plan["shot"]["shot"], "status": "cancelled", "code": "cancelled",
                               "message": "killed (cancelled twice)", "retry": False}
                except ray.exceptions.RayError as e:   # the worker or its node died
                    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
                    outcome = {"shot": plan["shot"]["shot"], "status": "failed", "code": "worker_died",
                               "message": f"the worker running it died ({type(e).__name__}: {first})"[:500],
                               "retry": True}
                    on_event({"event": "shot_end", "shot": outcome["shot"], "status": "failed",
                              "attempt": plan["attempt"], "code": outcome["code"], "message": outcome["message"]})
                outcome.setdefault("attempt", plan["attempt"])
                if outcome.get("retry") and plan["attempt"] <= retries and not cancel["flag"]:
                    on_event({"event": "retry", "shot": outcome["shot"], "attempt": plan["attempt"] + 1,
                              "reason": outcome.get("message", "")})
                    submit(dict(plan, attempt=plan["attempt"] + 1))
                    continue
                on_outcome(plan, outcome)
        for event in ray.get(board.drain.remote()):
            on_event(event)
    finally:
        ray.kill(board)
        shot_mod.clear_cancel(plans[0]["out_dir"])


def install_cancel_handlers(cancel: dict) -> None:
    """SIGINT / SIGTERM: first one cancels gracefully, the second kills the tasks."""
    def handler(signum, frame):
        if cancel["flag"]:
            cancel["force"] = True
        cancel["flag"] = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            signal.signal(sig, handler)
        except (ValueError, OSError):   # not the main thread
            pass
