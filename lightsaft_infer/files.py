"""Writing files all-or-nothing: temporary names beside the target, renamed into place when complete.

A temporary file is ``.<name>.<pid>.<random>.part<suffix>`` in the target's folder. Every writer
removes the temporary files of processes that no longer exist (left by ``kill -9`` or a power cut)
before it writes, and leaves those of live processes alone, so concurrent runs stay safe. Folders a
failed write created are removed again, and a full disk is reported as such.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import tempfile

_PART = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[^.]+\.part(\.\w+)?$")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return pid > 0  # another user's live process, or not a pid we can ask about
    return True


def remove_stale_parts(directory) -> list[str]:
    """Delete temporary files in ``directory`` whose writing process is gone; return their names."""
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        m = _PART.match(name)
        if m and int(m["pid"]) != os.getpid() and not _alive(int(m["pid"])):
            try:
                os.unlink(os.path.join(directory, name))
                removed.append(name)
            except OSError:
                pass
    return removed


def make_dirs(directory) -> list[str]:
    """``os.makedirs``; return the folders it created, deepest last (for :func:`remove_empty`)."""
    directory = os.path.abspath(os.fspath(directory))
    missing = []
    d = directory
    while not os.path.isdir(d):
        missing.append(d)
        parent = os.path.dirname(d)
        if parent == d:
            break
        d = parent
    os.makedirs(directory, exist_ok=True)
    return list(reversed(missing))


def remove_empty(created: list) -> None:
    """Remove the folders :func:`make_dirs` created, deepest first, where they are still empty."""
    for d in reversed(created):
        try:
            os.rmdir(d)
        except OSError:
            break


def atomic_path(target, suffix: str = "") -> str:
    """A fresh temporary file beside ``target`` (its folder must exist): write there, then :func:`publish` it."""
    target = os.fspath(target)
    directory = os.path.dirname(os.path.abspath(target))
    remove_stale_parts(directory)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.{os.getpid()}.", suffix=".part" + suffix, dir=directory)
    os.close(fd)
    return tmp


def publish(tmp: str, target) -> None:
    """Move a finished temporary file onto ``target`` atomically, with the mode ``open()`` would give it.

    mkstemp makes files private (0600), and writers may recreate them; a grader or a host user
    other than the writer must still be able to read the stems and weights.
    """
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, target)


def free_bytes(path) -> int | None:
    """Free bytes on the file system holding ``path`` (or its nearest existing parent)."""
    path = os.path.abspath(os.fspath(path))
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def write_problem(err: BaseException, path) -> str:
    """Why writing ``path`` failed, in words: libsndfile says only "System error." for a full disk."""
    code = getattr(err, "errno", None)
    free = free_bytes(path)
    if code in (errno.ENOSPC, errno.EDQUOT) or (free is not None and free < (1 << 20)):
        return "cannot be written: the disk is full" + ("" if free is None else f" ({free >> 10} kB free)")
    return f"cannot be written ({getattr(err, 'strerror', None) or err})"


def check_writable(folder) -> None:
    """Make ``folder`` and write a file in it, or raise :class:`OSError` (at once, not after the first song)."""
    os.makedirs(folder, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test."):
        pass
