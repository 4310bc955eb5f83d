"""Audio I/O and conversion: any readable file in, ``(samples, channels)`` float32 out.

Reading goes through soundfile (WAV 16/24/32-bit int and float, FLAC, OGG, …)
and checks what the separator cannot take: missing or corrupt files, no
samples, more than two channels, NaN/Inf. Writing goes to a temporary file
beside the target and is renamed into place, so a failure leaves no partial file.
"""

from __future__ import annotations

import math
import os

import numpy as np
import soundfile as sf

from .errors import AudioError
from .weights import atomic_path

MAX_CHANNELS = 2


def check_audio(audio: np.ndarray, path=None) -> np.ndarray:
    """Validate ``(samples,)`` or ``(samples, channels)`` audio; return ``(samples, channels)`` float32."""
    audio = np.asarray(audio)
    if audio.ndim == 1:
        audio = audio[:, None]
    if audio.ndim != 2:
        raise AudioError(path, f"audio must be (samples, channels), not an array of shape {audio.shape}")
    if not (np.issubdtype(audio.dtype, np.floating) or np.issubdtype(audio.dtype, np.integer)):
        raise AudioError(path, f"audio must hold numbers, not {audio.dtype}")
    if audio.shape[1] not in (1, MAX_CHANNELS):
        raise AudioError(path, f"has {audio.shape[1]} channels; only mono or stereo is supported")
    audio = audio.astype(np.float32, copy=False)
    if not np.isfinite(audio).all():
        bad = int(np.flatnonzero(~np.isfinite(audio).all(axis=1))[0])
        raise AudioError(path, f"contains NaN or infinite samples (first at sample {bad})")
    return audio


def read_audio(path) -> tuple[np.ndarray, int]:
    """Read a file: ``(audio (samples, channels) float32, sample_rate)``, or raise :class:`AudioError`."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise AudioError(path, "no such file")
    if os.path.isdir(path):
        raise AudioError(path, "is a directory, not an audio file")
    try:
        info = sf.info(path)
        if info.channels > MAX_CHANNELS:  # refuse before reading a large multichannel file
            raise AudioError(path, f"has {info.channels} channels; only mono or stereo is supported")
        audio, rate = sf.read(path, dtype="float32", always_2d=True)
    except AudioError:
        raise
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError) as err:
        raise AudioError(path, f"cannot be read as audio ({err})") from None
    except OSError as err:
        raise AudioError(path, f"cannot be read ({err.strerror or err})") from None
    if audio.shape[0] == 0:
        raise AudioError(path, "holds no samples")
    return check_audio(audio, path), int(rate)


def _write_file(path: str, audio: np.ndarray, sample_rate: int, subtype: str, fmt_path: str) -> None:
    """Write ``audio`` to ``path`` in the format that ``fmt_path``'s extension names (WAV by default)."""
    ext = os.path.splitext(fmt_path)[1].lower().lstrip(".") or "wav"
    fmt = {"wav": "WAV", "flac": "FLAC", "ogg": "OGG"}.get(ext)
    if fmt is None:
        raise AudioError(fmt_path, f"cannot write .{ext} files; use .wav, .flac or .ogg")
    if fmt == "FLAC" and subtype == "FLOAT":
        subtype = "PCM_24"
    if fmt == "OGG":
        subtype = "VORBIS"
    try:
        sf.write(path, audio, sample_rate, subtype=subtype, format=fmt)
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError, OSError) as err:
        raise AudioError(fmt_path, f"cannot be written ({err})") from None


def write_audio(path, audio: np.ndarray, sample_rate: int, subtype: str = "FLOAT") -> None:
    """Write ``(samples, channels)`` audio atomically; the format follows the extension (WAV by default)."""
    write_stems({path: audio}, sample_rate, subtype)


def resample(audio: np.ndarray, rate_in: int, rate_out: int, length: int | None = None) -> np.ndarray:
    """Polyphase resampling along axis 0 (``(samples, ...)``); ``length`` pads/cuts the result exactly."""
    if rate_in <= 0 or rate_out <= 0:
        raise ValueError(f"sample rates must be positive, not {rate_in} -> {rate_out}")
    if rate_in != rate_out:
        from scipy.signal import resample_poly

        g = math.gcd(rate_in, rate_out)
        audio = resample_poly(audio, rate_out // g, rate_in // g, axis=0).astype(np.float32)
    if length is not None and audio.shape[0] != length:
        if audio.shape[0] > length:
            audio = audio[:length]
        else:
            audio = np.concatenate([audio, np.zeros((length - audio.shape[0], *audio.shape[1:]), audio.dtype)])
    return audio


def write_stems(stems: dict, sample_rate: int, subtype: str = "FLOAT") -> None:
    """Write ``{path: (samples, channels)}`` all-or-nothing: every file goes to a temporary name beside
    its target first, and only when all are written are they renamed into place."""
    done = {}
    try:
        for path, audio in stems.items():
            path = os.fspath(path)
            try:
                tmp = atomic_path(path, os.path.splitext(path)[1] or ".wav")
            except OSError as err:
                raise AudioError(path, f"cannot create the output file ({err.strerror or err})") from None
            done[tmp] = path
            _write_file(tmp, audio, sample_rate, subtype, fmt_path=path)
        for tmp, path in done.items():
            try:
                os.replace(tmp, path)
            except OSError as err:
                raise AudioError(path, f"cannot be written ({err.strerror or err})") from None
    finally:
        for tmp in done:
            if os.path.exists(tmp):
                os.unlink(tmp)
