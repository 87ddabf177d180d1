"""Small tmpfs mounts for tests of full disks and read-only locations.

The tests run as root on CI and on the development machine, where ``mount -t tmpfs``
works; :class:`Tmpfs` mounts one (optionally read-only, or of a few KiB to fill up) and
unmounts it afterwards. When mounting is not permitted the test fails with the reason:
such a test is never skipped silently.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

__all__ = ["Tmpfs"]


class Tmpfs:
    """A tmpfs mounted at ``path`` (created if needed) for the ``with`` block.

    Parameters
    ----------
    path : path
        The mount point.
    size : str
        ``mount -o size=...`` (e.g. ``'64k'``).
    read_only : bool
        Mount read-only.
    """

    def __init__(self, path: str | os.PathLike, size: str = "1m",
                 read_only: bool = False) -> None:
        self.path = Path(path)
        self.size = size
        self.read_only = read_only
        self.mounted = False

    def _mount(self, options: str) -> None:
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs",
                                 str(self.path)], capture_output=True, text=True)
        if result.returncode != 0:
            raise AssertionError(
                f"cannot mount a tmpfs at {self.path} ({result.stderr.strip()}); these "
                "tests need root (or CAP_SYS_ADMIN) to create a full or read-only file "
                "system")
        self.mounted = True

    def __enter__(self) -> Tmpfs:
        self.path.mkdir(parents=True, exist_ok=True)
        self._mount(f"size={self.size},mode=0777")
        if self.read_only:
            self.remount_read_only()
        return self

    def remount_read_only(self) -> None:
        """Make the mounted file system read-only (its files stay)."""
        subprocess.run(["mount", "-o", "remount,ro", str(self.path)], check=True)

    def fill(self, leave: int = 0) -> None:
        """Fill the file system, leaving about ``leave`` bytes free."""
        filler = self.path / ".filler"
        with open(filler, "wb") as handle:
            try:
                while True:
                    free = os.statvfs(self.path).f_bavail * os.statvfs(self.path).f_frsize
                    if free <= leave:
                        break
                    handle.write(b"\0" * min(65536, max(1, free - leave)))
                    handle.flush()
            except OSError:
                pass

    def __exit__(self, *exc: object) -> None:
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.path)], capture_output=True)
            self.mounted = False
