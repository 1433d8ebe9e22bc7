"""What a batch has finished, checked rather than assumed; and the batch manifest.

Each shot folder holds ``shot.json``: per finished step (``result``, ``mattes``, ``scene``) the
options it ran with, what it was made from and every file it wrote with its size and SHA-256.
A step counts as done on a rerun only when all of these still hold:

* the record is readable and names the same video, unchanged (size and modification time);
* the step ran with the same options (the ``key``: its arguments and, for steps that start
  from the result, the result's hash);
* every file it wrote is there with the same size and hash;
* a result file also reads back through the schema and is not a partial (cancelled) one.

The record is rewritten atomically after each step, so a kill at any moment leaves the previous
complete record. The manifest (``manifest.json`` and ``manifest.csv`` in the output folder) is
rewritten atomically after each shot ends, so a killed batch leaves a true, if shorter, one.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import time
from pathlib import Path
from typing import Optional

from ..common.atomic import atomic_file

RECORD_NAME = "shot.json"
RECORD_FORMAT, RECORD_VERSION = "pymaf-shot", 1
MANIFEST_JSON, MANIFEST_CSV = "manifest.json", "manifest.csv"
MANIFEST_FORMAT, MANIFEST_VERSION = "pymaf-batch", 1
STEPS = ("result", "mattes", "scene")
NOT_FINISHED = "not finished before"
CSV_FIELDS = ("shot", "status", "attempts", "seconds", "frames", "people", "estimator", "device", "video",
              "start", "stop", "result", "host", "gpus", "code", "error")


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def file_digest(path) -> dict:
    """``{"size": bytes, "sha256": hex}`` of a file (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
            size += len(block)
    return {"size": size, "sha256": h.hexdigest()}


def video_stamp(path) -> Optional[dict]:
    """What identifies the input video cheaply (plates can be gigabytes): size and mtime."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def step_key(args: list, *inputs: str) -> str:
    """One string for a step's arguments and the hashes of the files it starts from."""
    return hashlib.sha256(json.dumps([list(map(str, args)), list(inputs)]).encode()).hexdigest()[:32]


def files_written(folder: Path, paths) -> dict:
    """``{path relative to folder: digest}`` for the given files (files under given folders)."""
    out = {}
    for p in paths:
        p = Path(p)
        found = sorted(q for q in p.rglob("*") if q.is_file() and not q.name.startswith(".")) if p.is_dir() else [p]
        for q in found:
            out[q.relative_to(folder).as_posix()] = file_digest(q)
    return out


def write_json(path, obj) -> None:
    data = (json.dumps(obj, indent=1, allow_nan=False) + "\n").encode()
    with atomic_file(path) as f:
        f.write(data)


def read_record(folder: Path) -> Optional[dict]:
    """The shot's record, or None when missing or not one of ours (a bad record: start over)."""
    try:
        rec = json.loads((Path(folder) / RECORD_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(rec, dict) or rec.get("format") != RECORD_FORMAT or rec.get("version") != RECORD_VERSION \
            or not isinstance(rec.get("steps"), dict):
        return None
    return rec


def new_record(shot: dict) -> dict:
    return {"format": RECORD_FORMAT, "version": RECORD_VERSION, "shot": shot["shot"], "video": shot["video"],
            "video_stamp": video_stamp(shot["video"]), "start": shot.get("start"), "stop": shot.get("stop"),
            "steps": {}}


def save_step(folder: Path, record: dict, step: str, key: str, outputs, **info) -> dict:
    """Add a finished step (hashing what it wrote) and rewrite the record atomically."""
    folder = Path(folder)
    record["steps"][step] = {"key": key, "finished": now_iso(), "outputs": files_written(folder, outputs), **info}
    write_json(folder / RECORD_NAME, record)
    return record["steps"][step]


def step_problem(folder: Path, record: Optional[dict], shot: dict, step: str, key: str) -> Optional[str]:
    """Why ``step`` of this shot must (re)run, or None when its outputs are complete and valid."""
    if record is None:
        return NOT_FINISHED
    if record.get("video") != shot["video"] or (record.get("start"), record.get("stop")) != (
            shot.get("start"), shot.get("stop")):
        return "the shot's video or frame range changed"
    if record.get("video_stamp") != video_stamp(shot["video"]):
        return "the video changed"
    entry = record["steps"].get(step)
    if not isinstance(entry, dict) or not isinstance(entry.get("outputs"), dict) or not entry["outputs"]:
        return NOT_FINISHED
    if entry.get("key") != key:
        return "run with other options" if step == "result" else "run with other options or on another result"
    for rel, want in entry["outputs"].items():
        path = Path(folder) / rel
        if not path.is_file():
            return f"{rel} is missing"
        if path.stat().st_size != want.get("size"):
            return f"{rel} has changed (size)"
        if file_digest(path)["sha256"] != want.get("sha256"):
            return f"{rel} has changed"
    if step == "result":
        return result_problem(Path(folder) / entry["result"]) if entry.get("result") else "no result recorded"
    return None


def drop_steps(folder: Path, record: dict, steps) -> None:
    """Forget ``steps`` and remove their output folders: they were made from a result that is
    being replaced (a cancel or failure of the new one must not leave them beside it)."""
    import shutil

    for step in steps:
        record["steps"].pop(step, None)
        target = Path(folder) / step_folder(step)
        if step != "result" and target.is_dir():
            shutil.rmtree(target)
    if (Path(folder) / RECORD_NAME).is_file():
        write_json(Path(folder) / RECORD_NAME, record)


def step_folder(step: str) -> str:
    """The folder a later step writes into, in the shot's folder."""
    return {"mattes": "mattes", "scene": "scene"}.get(step, "")


def partial_problem(path: Path) -> Optional[str]:
    """What to say of a result file that a cancelled run left (None: no such file there)."""
    if not Path(path).is_file():
        return None
    why = result_problem(path)
    return why if why is not None and "partial" in why else None


def result_problem(path: Path) -> Optional[str]:
    """None when ``path`` is a complete, valid result file; else why not."""
    from ..common.result_schema import ResultError, read_result

    try:
        res = read_result(path)
    except ResultError as e:
        return str(e)
    if res.partial:
        return f"{path.name} is a partial result (cancelled after {res.meta.get('frames_done')} frames)"
    return None


# --- manifest ---------------------------------------------------------------------------------
def manifest(entries: list, *, started: str, seconds: float, ray: dict, options: dict, finished: bool) -> dict:
    counts = {}
    for e in entries:
        counts[e["status"]] = counts.get(e["status"], 0) + 1
    return {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "started": started, "updated": now_iso(),
            "finished": finished, "seconds": round(seconds, 2), "ray": ray, "options": options,
            "counts": counts, "shots": entries}


def write_manifest(out_dir: Path, data: dict) -> None:
    """``manifest.json`` (everything) and ``manifest.csv`` (a row per shot), each atomically."""
    out_dir = Path(out_dir)
    write_json(out_dir / MANIFEST_JSON, data)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for e in data["shots"]:
        w.writerow({**e, "error": e.get("message", "") if e.get("status") in ("failed", "cancelled") else ""})
    with atomic_file(out_dir / MANIFEST_CSV) as f:
        f.write(buf.getvalue().encode("utf-8"))
