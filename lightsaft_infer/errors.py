"""Errors that the CLI and ``predict.py`` turn into one-line messages.

Every error names the file it is about, so that ``str(err)`` is a complete,
single-line diagnosis (``"song.wav: has 6 channels; only mono or stereo is supported"``).
"""

from __future__ import annotations

import os


class LightsaftError(Exception):
    """Base class for every error this package raises on bad input."""

    def __init__(self, path: str | os.PathLike | None, problem: str):
        self.path = None if path is None else os.fspath(path)
        self.problem = " ".join(str(problem).split())  # always one line
        super().__init__(self.problem if self.path is None else f"{self.path}: {self.problem}")


class AudioError(LightsaftError):
    """An audio file that is missing, unreadable, corrupt or unsupported."""


class WeightFileError(LightsaftError):
    """A weight file or checkpoint that cannot be used."""


class UnsafeCheckpointError(WeightFileError):
    """A checkpoint whose pickle asks for anything but tensors and plain containers."""


class BackendFailed(LightsaftError):
    """A backend raised while running a window (a runtime's own error): under a deadline the window is
    taken by the next path instead; without one it is the caller's error."""
