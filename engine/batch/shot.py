"""One shot of a batch: its steps as child processes, without Ray (the task body).

Steps, each skipped when ``record.step_problem`` finds its outputs complete and valid:

1. ``result``: ``python -m engine run VIDEO -o <shot>/<shot>.npz --progress jsonl [options]``;
2. ``mattes`` (optional): ``python -m engine mattes <shot>.npz --out <shot>/mattes --video VIDEO``;
3. ``scene`` (optional): the headless Blender job on that result
   (``pymaf_blender.cli VIDEO --out <shot>/scene --result <shot>.npz``): ``.blend`` and FBX.

Every child runs through ``common.jobs.Job`` (argument lists, never a shell; killed with its
worker on Linux), logs to ``<shot>/logs/<step>.log`` (appended per attempt) and reports progress
through a callback. The outputs of a step are written under their final names only once complete
(the engine's and the exporters' atomic writes); a step's folder (mattes, scene) is emptied
before it reruns so nothing of another run is left mixed in; the step enters the shot's record
(``shot.json``) only after it succeeded.

``run_shot(plan, report, cancelled)`` -> an outcome dict (status ``done``, ``skipped``,
``failed`` or ``cancelled``; ``retry``: whether trying again could help).
"""
from __future__ import annotations

import os
import shutil
import socket
import time
from pathlib import Path
from typing import Callable, Optional

from ..common import jobs
from ..common.result_schema import ResultError, read_result
from . import record as rec

# A video that cannot be read, nobody in it, bad arguments: the same on every try.
NOT_RETRIED_EXIT_CODES = frozenset((2, 3, 4))
POLL_S = 0.1
CANCEL_CHECK_S = 0.3
CANCEL_FLAG = ".cancel-batch"   # in the output folder: the batch was cancelled


def request_cancel(out_dir) -> None:
    (Path(out_dir) / CANCEL_FLAG).touch()


def clear_cancel(out_dir) -> None:
    try:
        (Path(out_dir) / CANCEL_FLAG).unlink()
    except FileNotFoundError:
        pass


def cancel_requested(out_dir) -> bool:
    return (Path(out_dir) / CANCEL_FLAG).exists()


def shot_folder(plan: dict) -> Path:
    return Path(plan["out_dir"]) / plan["shot"]["shot"]


def result_path(plan: dict) -> Path:
    return shot_folder(plan) / f"{plan['shot']['shot']}.npz"


def range_args(shot: dict) -> list:
    args = []
    if shot.get("start") is not None:
        args += ["--start", str(shot["start"])]
    if shot.get("stop") is not None:
        args += ["--stop", str(shot["stop"])]
    return args


def step_keys(plan: dict, record: Optional[dict]) -> dict:
    """The key each step must match: its arguments (and the result's hash for later steps)."""
    keys = {"result": rec.step_key(["run", *range_args(plan["shot"]), *plan["run_args"]])}
    result_entry = (record or {}).get("steps", {}).get("result") or {}
    result_hash = (result_entry.get("outputs") or {}).get(result_path(plan).name, {}).get("sha256", "")
    if plan.get("mattes_args") is not None:
        keys["mattes"] = rec.step_key(["mattes", *plan["mattes_args"]], result_hash)
    if plan.get("scene") is not None:
        keys["scene"] = rec.step_key(["scene", *plan["scene"]["args"]], result_hash)
    return keys


def pending_steps(plan: dict) -> dict:
    """``{step: why it must run}`` for the steps that are not complete (empty: the shot is done).
    A step after one that must run always runs too (it starts from the new result)."""
    folder = shot_folder(plan)
    record = rec.read_record(folder)
    keys = step_keys(plan, record)
    pending = {}
    for step in rec.STEPS:
        if step not in keys:
            continue
        if pending:
            pending[step] = "it starts from a new result"
            continue
        why = rec.partial_problem(result_path(plan)) if step == "result" else None   # a cancelled run's
        if why is None:
            why = rec.step_problem(folder, record, plan["shot"], step, keys[step])
        if why is not None:
            pending[step] = why
    return pending


def _run_child(argv: list, *, plan: dict, step: str, protocol: str, report: Callable, cancelled: Callable,
               cwd: Path, pythonpath: Optional[str] = None):
    """Run one child to the end, forwarding its progress; -> jobs.JobResult."""
    env = jobs.engine_env(pythonpath or plan["engine_parent"], extra=plan.get("env"))
    log = shot_folder(plan) / "logs" / f"{step}.log"
    with open(log, "a", encoding="utf-8") as f:   # one log per step, appended: say which try this is
        f.write(f"\n=== {rec.now_iso()} {socket.gethostname()}: try {plan.get('attempt', 1)} ===\n")
    job = jobs.Job(argv, env=env, cwd=str(cwd), protocol=protocol, label=f"the {step} step",
                   log_path=log, grace_s=30.0, die_with_parent=True)
    job.start()
    shot = plan["shot"]["shot"]
    report({"event": "child", "shot": shot, "step": step, "pid": job.pid})
    next_check = time.monotonic() + CANCEL_CHECK_S
    while True:
        try:
            for event in job.poll():
                if event.get("event") == "progress":
                    report({"event": "progress", "shot": shot, "step": step,
                            **{k: event.get(k) for k in ("stage", "done", "total", "fps", "eta_s")}})
            if job.result is not None:
                return job.result
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + CANCEL_CHECK_S
                if not job.cancelling and cancelled():
                    job.cancel()
            time.sleep(POLL_S)
        except KeyboardInterrupt:   # Ray's cancel, or Ctrl+C without a batch around it
            job.cancel()


def _clear(folder: Path) -> None:
    if folder.is_dir():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)


def _failure(outcome: dict, step: str, res) -> dict:
    status = "cancelled" if res.status == "cancelled" else "failed"
    rc = res.returncode
    outcome.update(status=status, step=step, code=res.code or "failed", message=res.message.strip(),
                   retry=status == "failed" and rc not in NOT_RETRIED_EXIT_CODES, returncode=rc)
    return outcome


def run_shot(plan: dict, report: Callable[[dict], None] = lambda e: None,
             cancelled: Callable[[], bool] = lambda: False) -> dict:
    """Run the shot's pending steps; -> outcome (see the module docstring)."""
    t0 = time.monotonic()
    shot = plan["shot"]
    folder = shot_folder(plan)
    outcome = {"shot": shot["shot"], "status": "done", "code": "", "message": "", "retry": False,
               "attempt": plan.get("attempt", 1), "host": socket.gethostname(), "pid": os.getpid(),
               "gpus": os.environ.get("CUDA_VISIBLE_DEVICES", ""), "steps": {}}
    report({"event": "shot_start", "shot": shot["shot"], "attempt": outcome["attempt"], "host": outcome["host"],
            "pid": outcome["pid"], "gpus": outcome["gpus"]})
    try:
        if cancelled():
            outcome.update(status="cancelled", code="cancelled", message="cancelled before it started")
            return outcome
        try:
            (folder / "logs").mkdir(parents=True, exist_ok=True)
        except OSError as e:
            outcome.update(status="failed", code="write_failed", retry=True,
                           message=f"cannot make {folder}: {e.strerror or e}")
            return outcome
        pending = pending_steps(plan)
        record = rec.read_record(folder)
        if record is None or "result" in pending and pending["result"] in (
                "the shot's video or frame range changed", "the video changed"):
            record = rec.new_record(shot)
        if "result" in pending:   # what was made from the old result goes with it
            rec.drop_steps(folder, record, [st for st in rec.STEPS if st != "result"])
        if not pending:
            outcome["status"] = "skipped"
        result = result_path(plan)
        py = plan["engine_python"]
        for step in rec.STEPS:
            if step not in step_keys(plan, record):
                continue
            if step not in pending:
                outcome["steps"][step] = {"status": "complete"}
                continue
            t_step = time.monotonic()
            report({"event": "step", "shot": shot["shot"], "step": step, "why": pending[step]})
            if step == "result":
                argv = jobs.engine_command(py, "run", shot["video"], "-o", result, "--progress", "jsonl",
                                           *range_args(shot), *plan["run_args"])
                outputs = [result]
                res = _run_child(argv, plan=plan, step=step, protocol="jsonl", report=report,
                                 cancelled=cancelled, cwd=folder)
            elif step == "mattes":
                _clear(folder / rec.step_folder(step))
                argv = jobs.engine_command(py, "mattes", result, "--out", folder / "mattes", "--video", shot["video"],
                                           "--progress", "jsonl", *plan["mattes_args"])
                outputs = [folder / "mattes"]
                res = _run_child(argv, plan=plan, step=step, protocol="jsonl", report=report,
                                 cancelled=cancelled, cwd=folder)
            else:
                _clear(folder / rec.step_folder(step))
                argv = [*plan["scene"]["command"], shot["video"], "--out", str(folder / "scene"),
                        "--result", str(result), "--engine-python", py, "--name", shot["shot"],
                        *plan["scene"]["args"]]
                outputs = [folder / "scene"]
                res = _run_child(argv, plan=plan, step=step, protocol="plain", report=report,
                                 cancelled=cancelled, cwd=folder, pythonpath=plan["scene"]["pythonpath"])
            if not res.ok:
                return _failure(outcome, step, res)
            info = {"seconds": round(time.monotonic() - t_step, 3)}
            if step == "result":
                try:
                    summary = result_summary(result)
                except ResultError as e:
                    outcome.update(status="failed", step=step, code="bad_result", retry=True,
                                   message=f"the engine reported success but its result is not usable: {e}")
                    return outcome
                info.update(result=result.name, **summary)
            rec.save_step(folder, record, step, step_keys(plan, record)[step], outputs, **info)
            outcome["steps"][step] = {"status": "ran", "seconds": info["seconds"]}
        entry = record["steps"].get("result", {})
        outcome.update({k: entry.get(k) for k in ("frames", "people", "estimator", "device")})
        outcome["result"] = f"{shot['shot']}/{result.name}"
        return outcome
    except OSError as e:   # the output folder went away, disk full writing the record, ...
        outcome.update(status="failed", code="write_failed", retry=True,
                       message=f"{type(e).__name__}: {e.strerror or e}")
        return outcome
    finally:
        outcome["seconds"] = round(time.monotonic() - t0, 3)
        report({"event": "shot_end", **{k: outcome.get(k) for k in ("shot", "status", "attempt", "code", "message",
                                                                      "seconds")}})


def result_summary(path: Path) -> dict:
    """What the manifest says about a result; raises ResultError when it is not complete."""
    res = read_result(path)
    if res.partial:
        raise ResultError(f"{path.name} is a partial result")
    meta = res.meta
    return {"frames": int(meta.get("frames_done") or 0), "people": len(res.tracks),
            "estimator": (meta.get("estimator") or {}).get("label", ""),
            "device": (meta.get("provenance") or {}).get("device", "")}
