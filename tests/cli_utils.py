"""Helpers for tests that run the ``daskgmm`` command in a real process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

__all__ = ["assert_clean_error", "cli_env", "finish", "leftovers", "run_cli", "start_cli",
           "tree_digest"]


def cli_env(**extra: str) -> dict[str, str]:
    """The environment of a CLI subprocess: faulthandler on (SIGABRT dumps every
    thread's stack, for a test that has to diagnose a hang)."""
    env = {**os.environ, "PYTHONFAULTHANDLER": "1", **extra}
    env.pop("DASK_SCHEDULER_ADDRESS", None)
    return env


def run_cli(*args: object, timeout: float = 120, cwd: Path | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python -m daskgmm ARGS`` in a fresh process."""
    return subprocess.run([sys.executable, "-m", "daskgmm", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, cwd=cwd,
                          env=env or cli_env())


def _default_sigint() -> None:
    """In the child before exec: Ctrl-C as a terminal's job has it (the default action),
    whatever the test process inherited or was left with (an ignored SIGINT is
    inherited through exec, and ``daskgmm`` rightly keeps ignoring it then)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_cli(*args: object, env: dict[str, str] | None = None,
              new_session: bool = False) -> subprocess.Popen:
    """Start ``python -m daskgmm ARGS`` with piped output (text)."""
    return subprocess.Popen([sys.executable, "-m", "daskgmm", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env or cli_env(), start_new_session=new_session,
                            preexec_fn=_default_sigint)


def finish(proc: subprocess.Popen, timeout: float) -> tuple[str, str]:
    """Wait for ``proc``; on a hang, dump its threads' stacks and fail with them."""
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        try:
            _, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        raise AssertionError(f"daskgmm did not exit within {timeout} s; its stacks:\n"
                             f"{err[-12000:]}") from None


def assert_clean_error(result: subprocess.CompletedProcess | tuple[int, str],
                       *fragments: str, code: int = 2) -> None:
    """Exit ``code``, one ``daskgmm: error:`` line, no traceback, every fragment in it."""
    if isinstance(result, tuple):
        returncode, stderr = result
    else:
        returncode, stderr = result.returncode, result.stderr
    assert returncode == code, (returncode, stderr)
    assert "daskgmm: error: " in stderr, stderr
    assert "Traceback" not in stderr, stderr
    error_lines = [line for line in stderr.splitlines() if line.startswith("daskgmm: error")]
    assert len(error_lines) == 1, stderr
    for fragment in fragments:
        assert fragment in stderr, (fragment, stderr)


def leftovers(parent: Path) -> list[str]:
    """Temporary siblings (``.NAME.tmp-*``, ``.NAME.old-*``) left in ``parent``."""
    return [p.name for p in parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


def tree_digest(path: Path) -> str:
    """SHA-256 over every file under ``path`` (relative names, sizes and bytes), or of
    the file itself: equal digests mean byte-identical data."""
    import hashlib

    digest = hashlib.sha256()
    path = Path(path)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        digest.update(str(file.relative_to(path) if file != path else file.name).encode())
        data = file.read_bytes()
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()
