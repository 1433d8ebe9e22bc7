"""Running the engine (or any command) as a child process without blocking (stdlib only).

The Blender extension drives the engine through this module (as ``pymaf_blender.common.jobs``)
and the engine's tests drive it with real subprocesses; it imports nothing from the engine,
no bpy and no torch.

* ``Job(argv)``: ``subprocess.Popen`` with an argument list (never a shell string), stdout and
  stderr read by two daemon threads into one queue. ``poll()`` drains the queue on the calling
  thread and returns the new events; it never blocks, so a Blender timer or modal operator can
  call it on every tick. ``wait()`` is the same loop, synchronous (background mode, tests).
* Events are dicts. With ``protocol="jsonl"`` (the engine's ``--progress jsonl``) stdout lines
  that are JSON objects with an ``"event"`` key are passed through (``progress``, ``done``,
  ``error``, ...); every other line becomes ``{"event": "log", "stream": ..., "line": ...}``.
  The last event of every job is ``{"event": "exit", "returncode": rc, "status": ...}``.
* A process that ends without a ``done`` or ``error`` event (a crash, a kill, an exit with a
  traceback) gets a synthesized ``{"event": "error", "code": "crashed", ...}`` naming the exit
  code (or signal) and the tail of its stderr.
* ``cancel()`` sends SIGINT to the child's process group (the engine then finishes its batch,
  writes a partial result and exits 130), escalates to SIGTERM after ``grace_s`` and to SIGKILL
  ``kill_s`` later; ``cancel(force=True)`` kills at once. On Windows CTRL_BREAK is sent instead
  (the process ends without a partial file).
* ``die_with_parent=True`` (Linux): the child is killed when the process that started it dies
  (a batch worker killed mid-shot leaves no engine behind).
* ``Sequence([(label, argv), ...])``: steps run one after another (engine setup: make a venv,
  then pip install), with the same interface; one log file for all of them.
"""
from __future__ import annotations

import collections
import json
import os
import queue
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Optional

EXIT_CANCELLED = 130
_WINDOWS = os.name == "nt"


def report_internal_error(err: BaseException, stdout, jsonl: bool) -> None:
    """A bug in an engine command: the traceback on stderr and, for ``--progress jsonl``, an
    ``{"event": "error", "code": "internal"}`` line on ``stdout`` (the real one) so the
    extension shows it."""
    import sys
    import traceback

    traceback.print_exc(file=sys.stderr)
    if jsonl:
        stdout.write(json.dumps({"event": "error", "code": "internal",
                                 "message": f"{type(err).__name__}: {err}"}) + "\n")
        stdout.flush()


def engine_command(python, *args, module: str = "engine") -> list:
    """``[python, -u, -m, engine, *args]`` (or another engine module, e.g. ``engine.check``):
    unbuffered, so progress lines arrive as they are printed."""
    return [os.fspath(python), "-u", "-m", module, *[os.fspath(a) for a in args]]


def engine_env(engine_parent, base: Optional[dict] = None, extra: Optional[dict] = None) -> dict:
    """Environment for an engine child: PYTHONPATH = the folder holding the ``engine`` package
    (only that one: whatever the parent had there belongs to another Python), unbuffered,
    UTF-8 output, no PYTHONHOME inherited from the parent interpreter."""
    env = dict(os.environ if base is None else base)
    for key in ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP", "PYTHONEXECUTABLE", "__PYVENV_LAUNCHER__"):
        env.pop(key, None)
    env["PYTHONPATH"] = os.fspath(engine_parent)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONIOENCODING"] = "utf-8"
    env.update(extra or {})
    return env


def _kill_me_with_parent() -> None:
    """In the child before exec (Linux): SIGKILL when the thread that started it dies, so a
    killed batch worker leaves no engine running on (its own session hides it from group
    signals). Elsewhere a no-op: the orphan finishes and its files are written atomically."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return
    PR_SET_PDEATHSIG = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() == 1:   # the parent died before prctl: do not run as an orphan
        os._exit(137)


def describe_returncode(rc: Optional[int]) -> str:
    if rc is None:
        return "still running"
    if rc < 0:
        try:
            return f"killed by signal {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    return f"exit code {rc}"


@dataclass
class JobResult:
    """How a job ended. ``status``: "done", "error" or "cancelled"."""
    status: str
    returncode: Optional[int]
    code: str = ""                      # the engine's error code ("no_person", "crashed", ...)
    message: str = ""                   # one sentence (plus the stderr tail for crashes)
    done: Optional[dict] = None         # the engine's "done" event
    stderr_tail: str = ""
    log_path: Optional[str] = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "done"


def _drive(job, timeout, interval, on_event):
    """Poll a started Job or Sequence until it has a result; past ``timeout`` s, kill it."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        for event in job.poll():
            if on_event is not None:
                on_event(event)
        if job.result is not None:
            return job.result
        if deadline is not None and time.monotonic() > deadline:
            job.cancel(force=True)
            deadline = None
        time.sleep(interval)


class Job:
    """One child process; see the module docstring."""

    def __init__(self, argv: Iterable, *, env: Optional[dict] = None, cwd=None, protocol: str = "jsonl",
                 label: str = "the engine", log_path=None, tail_lines: int = 40,
                 grace_s: float = 60.0, kill_s: float = 5.0, die_with_parent: bool = False):
        if isinstance(argv, (str, bytes)):
            raise TypeError("argv must be a list of arguments, not a shell string")
        self.argv = [os.fspath(a) for a in argv]
        if protocol not in ("jsonl", "plain"):
            raise ValueError(f"protocol must be 'jsonl' or 'plain', not {protocol!r}")
        self.env, self.cwd, self.protocol, self.label = env, cwd, protocol, label
        self.log_path = os.fspath(log_path) if log_path else None
        self.grace_s, self.kill_s = float(grace_s), float(kill_s)
        self.die_with_parent = die_with_parent
        self._tail = collections.deque(maxlen=tail_lines)
        self._queue: "queue.Queue" = queue.Queue()
        self._log_lock = threading.Lock()
        self._proc: Optional[subprocess.Popen] = None
        self._eof: set = set()
        self._exit_seen_at: Optional[float] = None
        self._cancel_at: Optional[float] = None
        self._escalation = 0
        self._final: Optional[dict] = None  # the engine's done/error event
        self._t0 = 0.0
        self.result: Optional[JobResult] = None
        self.last_progress: Optional[dict] = None

    # --- lifecycle --------------------------------------------------------------------------
    @property
    def started(self) -> bool:
        return self._proc is not None

    @property
    def finished(self) -> bool:
        return self.result is not None

    @property
    def cancelling(self) -> bool:
        return self._cancel_at is not None and not self.finished

    @property
    def pid(self) -> Optional[int]:
        return self._proc.pid if self._proc else None

    def start(self) -> "Job":
        if self._proc is not None:
            raise RuntimeError("job already started")
        self._t0 = time.monotonic()
        self._log(f"$ {' '.join(self.argv)}\n")
        kwargs = {}
        if _WINDOWS:
            kwargs["creationflags"] = (subprocess.CREATE_NEW_PROCESS_GROUP
                                       | getattr(subprocess, "CREATE_NO_WINDOW", 0))
        else:
            kwargs["start_new_session"] = True  # our own process group: a terminal's Ctrl+C is ours to pass on
            if self.die_with_parent:
                kwargs["preexec_fn"] = _kill_me_with_parent
        try:
            self._proc = subprocess.Popen(self.argv, env=self.env, cwd=self.cwd, stdin=subprocess.DEVNULL,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                          encoding="utf-8", errors="replace", bufsize=1, **kwargs)
        except OSError as exc:
            self._proc = None
            msg = f"could not start {self.label} ({self.argv[0]}): {exc.strerror or exc}"
            self._log(msg + "\n")
            self.result = JobResult("error", None, "start_failed", msg, log_path=self.log_path)
            self._queue.put(("synth", {"event": "error", "code": "start_failed", "message": msg}))
            self._queue.put(("synth", {"event": "exit", "returncode": None, "status": "error"}))
            return self
        for name, stream in (("stdout", self._proc.stdout), ("stderr", self._proc.stderr)):
            threading.Thread(target=self._reader, args=(name, stream), daemon=True,
                             name=f"pymaf-job-{name}").start()
        return self

    def _reader(self, name: str, stream) -> None:
        try:
            for line in stream:
                self._log(line if name == "stdout" else f"[stderr] {line}")
                self._queue.put((name, line.rstrip("\r\n")))
        except (OSError, ValueError):
            pass
        finally:
            self._queue.put((name, None))

    def _log(self, text: str) -> None:
        if not self.log_path:
            return
        with self._log_lock:
            try:
                with open(self.log_path, "a", encoding="utf-8") as fh:
                    fh.write(text)
            except OSError:
                pass

    # --- events -----------------------------------------------------------------------------
    def _parse(self, name: str, line: str) -> dict:
        if name == "stderr":
            self._tail.append(line)
            return {"event": "log", "stream": "stderr", "line": line}
        if self.protocol == "jsonl" and line.lstrip().startswith("{"):
            try:
                obj = json.loads(line)
            except ValueError:
                obj = None
            if isinstance(obj, dict) and isinstance(obj.get("event"), str):
                if obj["event"] in ("done", "error"):
                    self._final = obj
                elif obj["event"] == "progress":
                    self.last_progress = obj
                return obj
        return {"event": "log", "stream": "stdout", "line": line}

    def poll(self) -> list:
        """New events since the last call (never blocks). After the process ended and its
        output is drained, the last events are the synthesized error (if any) and "exit"."""
        events = []
        while True:
            try:
                name, item = self._queue.get_nowait()
            except queue.Empty:
                break
            if name == "synth":
                events.append(item)
            elif item is None:
                self._eof.add(name)
            else:
                events.append(self._parse(name, item))
        if self._proc is None or self.result is not None:
            return events
        self._escalate()
        rc = self._proc.poll()
        if rc is not None:
            now = time.monotonic()
            if self._exit_seen_at is None:
                self._exit_seen_at = now
            # Both pipes at EOF, or a grandchild keeps them open: do not wait for it forever.
            if self._eof >= {"stdout", "stderr"} or now - self._exit_seen_at > 2.0:
                events.extend(self._finish(rc))
        return events

    def _escalate(self) -> None:
        if self._cancel_at is None or self._proc.poll() is not None:
            return
        waited = time.monotonic() - self._cancel_at
        if self._escalation == 1 and waited > self.grace_s:
            self._escalation = 2
            self._log(f"[job] no exit {self.grace_s:g} s after the interrupt: terminating\n")
            self._signal(signal.SIGTERM)
        elif self._escalation == 2 and waited > self.grace_s + self.kill_s:
            self._escalation = 3
            self._log("[job] still running: killing\n")
            self._kill()

    def _signal(self, sig) -> None:
        try:
            if _WINDOWS:
                self._proc.send_signal(signal.CTRL_BREAK_EVENT if sig == signal.SIGINT else sig)
            else:
                os.killpg(self._proc.pid, sig)
        except (ProcessLookupError, PermissionError, OSError):
            try:
                self._proc.send_signal(sig)
            except OSError:
                pass

    def _kill(self) -> None:
        if _WINDOWS:
            self._proc.kill()
        else:
            self._signal(signal.SIGKILL)

    def _finish(self, rc: int) -> list:
        cancelled = self._cancel_at is not None
        tail = "\n".join(self._tail)
        final = self._final
        events = []
        done = None
        if self.protocol == "jsonl" and final is not None and final.get("event") == "done" and rc == 0:
            status, code, message, done = "done", "", "", final
        elif self.protocol == "plain" and rc == 0 and not cancelled:
            status, code, message = "done", "", ""
            done = {"event": "done"}
            events.append(done)
        elif final is not None and final.get("event") == "error":
            code = str(final.get("code", "error"))
            message = str(final.get("message", "")) or f"{self.label} failed ({describe_returncode(rc)})"
            status = "cancelled" if (code == "cancelled" or (cancelled and rc == EXIT_CANCELLED)) else "error"
        elif cancelled and (rc == EXIT_CANCELLED or rc < 0 or rc in (1, 143, 0xC000013A)):
            status, code, message = "cancelled", "cancelled", "cancelled"
            events.append({"event": "error", "code": code, "message": message})
        else:
            status, code = "error", "crashed" if self.protocol == "jsonl" else "failed"
            what = ("stopped unexpectedly" if self.protocol == "jsonl" else "failed")
            if rc == 0:
                message = f"{self.label} exited without reporting a result"
            else:
                message = f"{self.label} {what} ({describe_returncode(rc)})"
                if self.protocol == "jsonl":
                    message += " without an error message"
            if tail:
                message += ". Last output:\n" + tail
            events.append({"event": "error", "code": code, "message": message, "returncode": rc})
        self.result = JobResult(status, rc, code, message, done, tail, self.log_path,
                                time.monotonic() - self._t0)
        self._log(f"[job] {status} ({describe_returncode(rc)})\n")
        events.append({"event": "exit", "returncode": rc, "status": status})
        return events

    # --- control ----------------------------------------------------------------------------
    def cancel(self, force: bool = False) -> None:
        """Ask the child to stop (SIGINT; escalates by itself in ``poll``). ``force``: kill now."""
        if self._proc is None or self.result is not None:
            return
        if self._proc.poll() is not None:
            if self._cancel_at is None:
                self._cancel_at = time.monotonic()
            return
        if force:
            self._cancel_at = self._cancel_at or time.monotonic()
            self._escalation = 3
            self._log("[job] cancel: killing\n")
            self._kill()
            return
        if self._cancel_at is None:
            self._cancel_at = time.monotonic()
            self._escalation = 1
            self._log("[job] cancel: interrupt\n")
            self._signal(signal.SIGINT)

    def wait(self, timeout: Optional[float] = None, interval: float = 0.05,
             on_event: Optional[Callable[[dict], None]] = None) -> JobResult:
        """Run to the end on this thread; ``on_event`` sees every event. ``timeout``: kill the
        child after that many seconds (the result is then "cancelled")."""
        if not self.started and self.result is None:
            self.start()
        return _drive(self, timeout, interval, on_event)


class Sequence:
    """Steps ``[(label, argv), ...]`` run one after another, like one ``Job``: progress events
    ``{"event": "progress", "stage": label, "done": i, "total": n}`` between steps, every
    step's output as log events, stops at the first failure (its error is the result)."""

    def __init__(self, steps: list, *, env: Optional[dict] = None, cwd=None, log_path=None,
                 label: str = "setup", grace_s: float = 10.0, kill_s: float = 5.0):
        self.steps = [(str(lbl), list(argv)) for lbl, argv in steps]
        if not self.steps:
            raise ValueError("no steps")
        self.env, self.cwd, self.label = env, cwd, label
        self.log_path = os.fspath(log_path) if log_path else None
        self.grace_s, self.kill_s = grace_s, kill_s
        self.index = -1
        self.job: Optional[Job] = None
        self.result: Optional[JobResult] = None
        self._cancelled = False
        self._t0 = 0.0
        self.last_progress: Optional[dict] = None

    @property
    def started(self) -> bool:
        return self.index >= 0

    @property
    def finished(self) -> bool:
        return self.result is not None

    @property
    def cancelling(self) -> bool:
        return self._cancelled and not self.finished

    def start(self) -> "Sequence":
        self._t0 = time.monotonic()
        return self

    def _next(self, events: list) -> None:
        self.index += 1
        label, argv = self.steps[self.index]
        progress = {"event": "progress", "stage": label, "done": self.index, "total": len(self.steps)}
        self.last_progress = progress
        events.append(progress)
        self.job = Job(argv, env=self.env, cwd=self.cwd, protocol="plain", label=label,
                       log_path=self.log_path, grace_s=self.grace_s, kill_s=self.kill_s).start()

    def poll(self) -> list:
        events: list = []
        if self.result is not None:
            return events
        if self.job is None:
            if self._cancelled:
                return self._end("cancelled", None, "cancelled", "cancelled", events)
            self._next(events)
        for event in self.job.poll():
            if event["event"] == "exit":
                continue
            if event["event"] == "done":
                continue
            events.append(event)
        res = self.job.result
        if res is None:
            return events
        if res.status != "done":
            return self._end(res.status, res.returncode, res.code, res.message, events, res.stderr_tail)
        if self._cancelled:
            return self._end("cancelled", res.returncode, "cancelled", "cancelled", events)
        if self.index + 1 >= len(self.steps):
            done = {"event": "done", "steps": len(self.steps)}
            events.append(done)
            self.result = JobResult("done", 0, done=done, log_path=self.log_path,
                                    seconds=time.monotonic() - self._t0)
            events.append({"event": "exit", "returncode": 0, "status": "done"})
            return events
        self._next(events)
        return events

    def _end(self, status, rc, code, message, events, tail=""):
        if status == "error" and not any(e.get("event") == "error" for e in events):
            events.append({"event": "error", "code": code, "message": message})
        if status == "cancelled" and not any(e.get("event") == "error" for e in events):
            events.append({"event": "error", "code": "cancelled", "message": "cancelled"})
        self.result = JobResult(status, rc, code, message, None, tail, self.log_path,
                                time.monotonic() - self._t0)
        events.append({"event": "exit", "returncode": rc, "status": status})
        return events

    def cancel(self, force: bool = False) -> None:
        self._cancelled = True
        if self.job is not None:
            self.job.cancel(force=force)

    def wait(self, timeout: Optional[float] = None, interval: float = 0.05,
             on_event: Optional[Callable[[dict], None]] = None) -> JobResult:
        self.start()
        return _drive(self, timeout, interval, on_event)


__all__ = ["Job", "JobResult", "Sequence", "engine_command", "engine_env", "describe_returncode",
           "EXIT_CANCELLED"]
