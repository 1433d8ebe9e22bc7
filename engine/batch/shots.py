"""Which shots a batch runs: a folder of videos, a glob, or a text / CSV list.

A shot is one video (optionally a frame range) and the name of its output folder. Names are
the videos' file stems, made safe for a folder name; videos that share a stem are told apart by
their parent folders (``a/take1.mov``, ``b/take1.mov`` -> ``a_take1``, ``b_take1``).

* folder: the videos directly in it (by extension), sorted by name;
* glob: ``shots/**/*.mov`` (``**`` recurses), sorted;
* ``.txt``: one video per line, ``#`` comments, paths relative to the list's folder;
* ``.csv``: a header with a ``video`` column and optional ``name``, ``start``, ``stop`` columns
  (frame range per shot, video frame indices as ``engine run --start/--stop``); other columns
  (a shot list's notes, artists, ...) are ignored.

A listed video that does not exist is still a shot: it fails on its own (exit 3) without stopping
the others. Empty lists, unreadable lists, a video listed twice and clashing names are errors.
"""
from __future__ import annotations

import csv
import glob
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

VIDEO_EXTENSIONS = frozenset((".mp4", ".mov", ".avi", ".mkv", ".m4v", ".webm", ".mxf", ".mpg", ".mpeg", ".wmv",
                              ".mts", ".m2ts", ".ts", ".flv", ".3gp", ".ogv"))
CSV_COLUMNS = ("video", "name", "start", "stop")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class ShotListError(ValueError):
    """The shot list cannot be used (the message says why)."""


@dataclass(frozen=True)
class Shot:
    name: str                    # the output folder under --out
    video: str                   # absolute path
    start: Optional[int] = None  # video frame range, as engine run --start / --stop
    stop: Optional[int] = None

    def as_dict(self) -> dict:
        return {"shot": self.name, "video": self.video, "start": self.start, "stop": self.stop}


def safe_name(text: str) -> str:
    """A folder name from any text: letters, digits, ``.``, ``_``, ``-``; never empty or hidden."""
    name = _UNSAFE.sub("_", text).strip("._") or "shot"
    return name[:120]


def _is_video(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in VIDEO_EXTENSIONS and not path.name.startswith(".")


def _frame(value: str, column: str, where: str) -> Optional[int]:
    value = (value or "").strip()
    if not value:
        return None
    try:
        frame = int(value)
    except ValueError:
        raise ShotListError(f"{where}: {column} must be a frame number, not {value!r}") from None
    if frame < 0:
        raise ShotListError(f"{where}: {column} must be >= 0, not {frame}")
    return frame


def _read_text_list(path: Path) -> list:
    rows = []
    for line in _read(path).splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            rows.append({"video": line})
    return rows


def _read_csv_list(path: Path) -> list:
    reader = csv.DictReader(_read(path).splitlines())
    fields = [f.strip().lower() for f in (reader.fieldnames or [])]
    if "video" not in fields:
        raise ShotListError(f"{path}: a CSV shot list needs a header with a 'video' column "
                            f"(and optionally {', '.join(CSV_COLUMNS[1:])}); found {fields or 'no header'}")
    rows = []
    for line_no, raw in enumerate(reader, start=2):
        row = {k.strip().lower(): (v or "").strip() for k, v in raw.items() if k is not None}
        if not row.get("video"):
            continue
        where = f"{path.name} line {line_no}"
        row["start"], row["stop"] = _frame(row.get("start"), "start", where), _frame(row.get("stop"), "stop", where)
        if row["start"] is not None and row["stop"] is not None and row["stop"] <= row["start"]:
            raise ShotListError(f"{where}: stop ({row['stop']}) must be after start ({row['start']})")
        rows.append(row)
    return rows


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise ShotListError(f"cannot read the shot list {path}: {getattr(e, 'strerror', None) or e}") from None


def _unique_names(videos: list) -> list:
    """File stems; where stems clash (different videos), prefixed with as many parent folders as
    it takes to tell them apart. The same video listed twice keeps one name (ranges tell apart)."""
    parts = {v: Path(v).with_suffix("").parts for v in videos}
    depth = {v: 0 for v in videos}

    def name(v):
        return safe_name("_".join(parts[v][-1 - depth[v]:]))

    while True:
        by_name = {}
        for v in dict.fromkeys(videos):
            by_name.setdefault(name(v), []).append(v)
        clashes = [vs for vs in by_name.values() if len(vs) > 1]
        grown = False
        for vs in clashes:
            for v in vs:
                if depth[v] + 1 < len(parts[v]):
                    depth[v] += 1
                    grown = True
        if not clashes or not grown:
            return [name(v) for v in videos]


def list_shots(source: str) -> list:
    """-> [Shot] from a folder, a glob, or a .txt / .csv list (see the module docstring)."""
    src = Path(os.path.expanduser(str(source)))
    if src.is_dir():
        videos, base_rows = sorted(str(p.resolve()) for p in src.iterdir() if _is_video(p)), None
        if not videos:
            raise ShotListError(f"no videos in {src} (looked for {', '.join(sorted(VIDEO_EXTENSIONS))})")
        rows = [{"video": v} for v in videos]
    elif src.is_file() and src.suffix.lower() in (".txt", ".csv", ".lst"):
        rows = _read_csv_list(src) if src.suffix.lower() == ".csv" else _read_text_list(src)
        for row in rows:
            row["video"] = str((src.parent / os.path.expanduser(row["video"])).resolve())
        if not rows:
            raise ShotListError(f"the shot list {src} names no video")
    elif src.is_file():
        if src.suffix.lower() not in VIDEO_EXTENSIONS:
            raise ShotListError(f"{src} is neither a folder, a glob, a .txt/.csv shot list nor a video")
        rows = [{"video": str(src.resolve())}]
    elif glob.has_magic(str(source)):
        matches = sorted(str(Path(p).resolve()) for p in glob.glob(os.path.expanduser(str(source)), recursive=True)
                         if _is_video(Path(p)))
        if not matches:
            raise ShotListError(f"no videos match {source}")
        rows = [{"video": v} for v in matches]
    else:
        raise ShotListError(f"no such folder, list or video: {source}")
    seen = {}
    for row in rows:
        key = (row["video"], row.get("start"), row.get("stop"))
        if key in seen:
            raise ShotListError(f"{row['video']} is listed twice" + (" with the same frame range"
                                                                      if row.get("start") or row.get("stop") else ""))
        seen[key] = True
    auto = _unique_names([r["video"] for r in rows])
    shots = []
    for row, name in zip(rows, auto):
        given = row.get("name")
        if not given and (row.get("start") is not None or row.get("stop") is not None):
            name = f"{name}_{row.get('start') or 0}-{row.get('stop') if row.get('stop') is not None else 'end'}"
        shots.append(Shot(safe_name(given) if given else name, row["video"], row.get("start"), row.get("stop")))
    names = [s.name for s in shots]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise ShotListError(f"several shots would be written to the same folder: {', '.join(clashes)} "
                            "(give them different names in a CSV list's 'name' column)")
    return shots
