"""``python -m engine COMMAND ...``. Commands: ``run`` (video -> SMPL motion result) and
``analyze`` (video -> tracks JSON, no network); see engine/run.py for options and exit codes,
docs/engine-cli.md; ``mattes`` (result -> per-person matte sequences, engine/mattes.py);
``batch`` (many shots as Ray tasks, resumable: engine/batch/cli.py, docs/batch.md)."""
from __future__ import annotations

import sys

USAGE = ("usage: python -m engine run VIDEO -o RESULT.npz [options]        (python -m engine run --help)\n"
         "       python -m engine analyze VIDEO -o TRACKS.json [options]   (python -m engine analyze --help)\n"
         "       python -m engine mattes RESULT.npz --out DIR [options]    (python -m engine mattes --help)\n"
         "       python -m engine batch SHOTS --out DIR [options]          (python -m engine batch --help)")
COMMANDS = ("run", "analyze", "mattes", "batch")


def _unblock_cancel_signals() -> None:
    """Cancel is SIGINT / SIGTERM: a parent may have blocked them and a blocked mask survives exec
    (a Ray worker blocks SIGINT), so the handlers the commands install would never run."""
    import signal

    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    _unblock_cancel_signals()
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, file=sys.stderr)
        return 0 if argv else 2
    cmd, rest = argv[0], argv[1:]
    if cmd == "mattes":
        from engine.mattes import main as mattes_main
        return mattes_main(rest)
    if cmd == "batch":
        from engine.batch.cli import main as batch_main
        return batch_main(rest)
    if cmd in COMMANDS:
        from engine.run import main as run_main
        return run_main(rest, command=cmd)
    print(f"error: unknown command {cmd!r}\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
