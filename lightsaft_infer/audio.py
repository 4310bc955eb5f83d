"""Audio I/O and conversion: any readable file in, ``(samples, channels)`` float32 out.

Reading goes through soundfile (WAV 16/24/32-bit int and float, FLAC, OGG, …)
and checks what the separator cannot take: missing or corrupt files, no
samples, more than two channels, NaN/Inf. Writing goes to a temporary file
beside the target and is renamed into place, so a failure leaves no partial file.
"""

from __future__ import annotations

import os
import stat

import numpy as np
import soundfile as sf

from .errors import AudioError
from .files import atomic_path, free_bytes, make_dirs, publish, remove_empty, write_problem
from .resample import check_rate

MAX_CHANNELS = 2
#: Largest sample magnitude taken (+80 dBFS): float WAVs may exceed full scale, but a sample of 3e38 is a
#: damaged file, and the spectrogram of one overflows float32 (the network's output would be blamed).
MAX_LEVEL = 1e4


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
    check_samples(audio, path)
    return audio


def check_samples(audio: np.ndarray, path=None, first: int = 0) -> None:
    """Refuse NaN, infinite and absurdly loud samples in ``(samples, channels)`` starting at sample ``first``."""
    if not np.isfinite(audio).all():
        bad = first + int(np.flatnonzero(~np.isfinite(audio).all(axis=1))[0])
        raise AudioError(path, f"contains NaN or infinite samples (first at sample {bad})")
    loud = np.abs(audio) > MAX_LEVEL
    if loud.any():
        bad = int(np.flatnonzero(loud.any(axis=1))[0])
        level = 20 * np.log10(float(np.abs(audio[bad]).max()))
        raise AudioError(path, f"has a sample at level {level:+.0f} dBFS (sample {first + bad}); the input is damaged or "
                               f"not audio: samples must stay below {MAX_LEVEL:g} (+{20 * np.log10(MAX_LEVEL):.0f} dBFS)")


def read_audio(path) -> tuple[np.ndarray, int]:
    """Read a file: ``(audio (samples, channels) float32, sample_rate)``, or raise :class:`AudioError`."""
    with AudioReader(path) as reader:
        audio = reader.read(0, reader.frames)[: reader.channels].T  # mono comes back as one channel
        return check_audio(audio, reader.path), reader.sample_rate


def _format(path: str, subtype: str) -> tuple[str, str]:
    """``(format, subtype)`` for the extension of ``path`` (WAV by default)."""
    ext = os.path.splitext(path)[1].lower().lstrip(".") or "wav"
    fmt = {"wav": "WAV", "flac": "FLAC", "ogg": "OGG"}.get(ext)
    if fmt is None:
        raise AudioError(path, f"cannot write .{ext} files; use .wav, .flac or .ogg")
    if fmt == "FLAC" and subtype == "FLOAT":
        subtype = "PCM_24"
    if fmt == "OGG":
        subtype = "VORBIS"
    return fmt, subtype


class StemWriter:
    """Writes several files piece by piece, all-or-nothing.

    Each target gets a temporary file beside it; ``write(key, block)`` appends
    ``(samples, channels)``; ``commit()`` renames every file into place. Leaving
    the ``with`` block by an exception (or calling ``abort()``) deletes the
    temporary files, so a failure never leaves a partial stem behind.
    """

    def __init__(self, paths: dict, sample_rate: int, channels: int, subtype: str = "FLOAT", frames: int | None = None):
        self.paths = {k: os.fspath(p) for k, p in paths.items()}
        self.files, self.tmp, self.created = {}, {}, []
        try:
            for path in self.paths.values():
                _format(path, subtype)  # an unwritable format is refused before anything is created
            if frames is not None:
                check_space(self.paths.values(), frames, channels, subtype)
            for key, path in self.paths.items():
                fmt, sub = _format(path, subtype)
                try:
                    self.created += make_dirs(os.path.dirname(os.path.abspath(path)))
                    self.tmp[key] = atomic_path(path, os.path.splitext(path)[1] or ".wav")
                    self.files[key] = sf.SoundFile(os.fsencode(self.tmp[key]), "w", sample_rate, channels, sub, format=fmt)
                except (sf.LibsndfileError, RuntimeError, ValueError, TypeError, OSError) as err:
                    raise AudioError(path, write_problem(err, path)) from None
        except BaseException:
            self.abort()
            raise

    def write(self, key, block: np.ndarray) -> None:
        try:
            self.files[key].write(block)
        except (sf.LibsndfileError, RuntimeError, ValueError, TypeError, OSError) as err:
            raise AudioError(self.paths[key], write_problem(err, self.paths[key])) from None

    def commit(self) -> None:
        """Rename every file into place, all or none: a target that cannot be replaced (a folder, a
        refusal) is found before any rename, and a rename that fails puts back the ones done before it."""
        key = next(iter(self.paths), None)
        try:
            for key, f in self.files.items():
                f.close()  # flushes: a full disk may show only here
            for key, target in self.paths.items():
                if os.path.isdir(target) and not os.path.islink(target):
                    raise AudioError(target, "is a folder, so the stem cannot be written there; no stem of this "
                                             "song was replaced")
        except (sf.LibsndfileError, RuntimeError, OSError) as err:
            raise AudioError(self.paths[key], write_problem(err, self.paths[key])) from None
        done, backups = [], {}
        try:
            for key, tmp in self.tmp.items():
                target = self.paths[key]
                if os.path.lexists(target):  # kept until every stem is in place, to put back on failure
                    backup = atomic_path(target, ".bak")
                    os.unlink(backup)
                    try:
                        os.link(target, backup, follow_symlinks=False)
                        backups[key] = backup
                    except OSError:  # a file system without hard links: no way back for this one
                        pass
                publish(tmp, target)
                done.append(key)
        except OSError as err:
            for k in done:  # put back what this commit replaced
                try:
                    os.replace(backups[k], self.paths[k]) if k in backups else os.unlink(self.paths[k])
                except OSError:
                    pass
            raise AudioError(self.paths[key], write_problem(err, self.paths[key]) + "; no stem of this song was "
                                              "replaced") from None
        finally:
            for b in backups.values():
                if os.path.lexists(b):
                    os.unlink(b)
        self.tmp = {}

    def abort(self) -> None:
        for f in self.files.values():
            try:
                f.close()
            except (sf.LibsndfileError, RuntimeError, OSError):
                pass  # e.g. a full disk: the file is deleted below anyway
        for tmp in self.tmp.values():
            if os.path.exists(tmp):
                os.unlink(tmp)
        self.tmp = {}
        remove_empty(self.created)  # a failed song leaves no empty folder behind
        self.created = []

    def __enter__(self):
        return self

    def __exit__(self, kind, value, tb):
        if kind is not None or self.tmp:
            self.abort()


#: Bytes per sample of the WAV subtypes written (FLAC and OGG compress: their size is not checked up front).
_SAMPLE_BYTES = {"FLOAT": 4, "PCM_16": 2, "PCM_24": 3, "PCM_32": 4, "DOUBLE": 8}


def check_space(paths, frames: int, channels: int, subtype: str = "FLOAT") -> None:
    """Refuse up front when the WAV files ``paths`` (``frames`` x ``channels``) cannot fit on their disk."""
    by_disk: dict = {}
    for path in paths:
        fmt, sub = _format(path, subtype)
        if fmt == "WAV":
            folder = os.path.dirname(os.path.abspath(path))
            by_disk[folder] = by_disk.get(folder, 0) + frames * channels * _SAMPLE_BYTES.get(sub, 4) + 4096
    for folder, need in by_disk.items():
        free = free_bytes(folder)
        if free is not None and need > free:
            raise AudioError(folder, f"not enough disk space: the stems need {need / 1e6:.1f} MB, {free / 1e6:.1f} MB free")


def write_audio(path, audio: np.ndarray, sample_rate: int, subtype: str = "FLOAT") -> None:
    """Write ``(samples, channels)`` audio atomically; the format follows the extension (WAV by default)."""
    write_stems({path: audio}, sample_rate, subtype)


def write_silence(paths, frames: int, sample_rate: int, channels: int, subtype: str = "FLOAT") -> None:
    """Write silent files of ``frames`` x ``channels`` to every path in ``paths``, all-or-nothing, in
    blocks (memory does not grow with the length)."""
    paths = {os.fspath(p): os.fspath(p) for p in paths}
    block = np.zeros((min(frames, 1 << 18), channels), np.float32)
    with StemWriter(paths, sample_rate, channels, subtype, frames) as writer:
        for key in paths:
            for a in range(0, frames, len(block)):
                writer.write(key, block[: min(len(block), frames - a)])
        writer.commit()


def write_stems(stems: dict, sample_rate: int, subtype: str = "FLOAT") -> None:
    """Write ``{path: (samples, channels)}`` all-or-nothing (see :class:`StemWriter`)."""
    stems = {os.fspath(p): np.asarray(a) for p, a in stems.items()}
    channels = {a.shape[1] if a.ndim == 2 else 1 for a in stems.values()}
    if len(channels) != 1:
        raise ValueError("all stems must have the same number of channels")
    frames = max((a.shape[0] for a in stems.values()), default=0)
    with StemWriter({p: p for p in stems}, sample_rate, channels.pop(), subtype, frames) as writer:
        for path, audio in stems.items():
            writer.write(path, audio)
        writer.commit()


def _wav_announced_frames(path: str, info) -> int | None:
    """Samples a RIFF WAV's ``data`` chunk header announces (libsndfile silently reports only what is
    there), or None for other formats and headers that cannot be walked."""
    if info.format != "WAV":
        return None
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            block = None
            for _ in range(64):  # chunks before 'data': fmt, fact, LIST, ...
                chunk = f.read(8)
                if len(chunk) < 8:
                    return None
                tag, size = chunk[:4], int.from_bytes(chunk[4:], "little")
                if tag == b"fmt ":
                    fmt = f.read(size + (size & 1))
                    block = int.from_bytes(fmt[12:14], "little") if len(fmt) >= 14 else None
                    continue
                if tag == b"data":  # 0 and 0xFFFFFFFF: a streamed file's placeholder, not a claim
                    return size // block if block and 0 < size < 0xFFFFFFFF else None
                f.seek(size + (size & 1), 1)
    except OSError:
        return None
    return None


_KINDS = {stat.S_IFIFO: "FIFO", stat.S_IFCHR: "character device", stat.S_IFBLK: "block device",
          stat.S_IFSOCK: "socket"}


def check_regular(path) -> None:
    """Refuse anything but a regular file before it is opened: opening a FIFO or a device blocks or never ends."""
    try:
        kind = os.stat(path).st_mode
    except FileNotFoundError:
        raise AudioError(path, "no such file") from None
    except OSError as err:
        raise AudioError(path, f"cannot be read ({err.strerror or err})") from None
    if stat.S_ISDIR(kind):
        raise AudioError(path, "is a directory, not an audio file")
    if not stat.S_ISREG(kind):
        raise AudioError(path, f"is a {_KINDS.get(stat.S_IFMT(kind), 'special file')}, not a regular file; "
                               "only regular files are read as audio")


def audio_info(path):
    """``soundfile.info`` of a regular file (any name), or :class:`AudioError` naming it."""
    check_regular(path)
    try:
        return sf.info(os.fsencode(path))
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError) as err:
        raise AudioError(path, f"cannot be read as audio ({err})") from None


class AudioReader:
    """A mixture file read in pieces: ``read(a, b) -> (2, b - a)`` float32 (mono duplicated).

    Opening refuses missing files, directories, unreadable or empty audio and
    more than two channels; every piece is checked for NaN/Inf, so a bad sample
    anywhere raises :class:`AudioError` naming the file.
    """

    def __init__(self, path):
        self.path = os.fspath(path)
        check_regular(self.path)
        try:
            self.file = sf.SoundFile(os.fsencode(self.path))  # bytes: names need not be UTF-8
        except (sf.LibsndfileError, RuntimeError, ValueError, TypeError) as err:
            raise AudioError(self.path, f"cannot be read as audio ({err})") from None
        except OSError as err:
            raise AudioError(self.path, f"cannot be read ({err.strerror or err})") from None
        self.channels, self.sample_rate, self.frames = self.file.channels, self.file.samplerate, self.file.frames
        try:
            check_rate(self.sample_rate, self.path)
        except AudioError:
            self.close()
            raise
        if self.channels > MAX_CHANNELS:
            self.close()
            raise AudioError(self.path, f"has {self.channels} channels; only mono or stereo is supported")
        if self.frames <= 0:
            self.close()
            raise AudioError(self.path, "holds no samples")
        #: Problems that do not stop the separation (a truncated file), for the caller to report.
        self.warnings: list[str] = []
        self.readable = self.frames  # samples that decode; the rest reads as silence
        announced = _wav_announced_frames(self.path, self.file)
        if announced is not None and announced > self.frames:
            self.warnings.append(f"{self.path}: is truncated: its header announces {announced} samples, "
                                 f"{self.frames} are there; the stems have the readable length")

    def read(self, a: int, b: int) -> np.ndarray:
        x = self._decode(a, min(b, self.readable)) if a < self.readable else np.zeros((0, self.channels), np.float32)
        if x.shape[0] < b - a:  # past a damaged point: silence, so that the stems keep the announced length
            x = np.concatenate([x, np.zeros((b - a - x.shape[0], self.channels), np.float32)])
        check_samples(x, self.path, a)
        return np.repeat(x.T, 2, axis=0) if x.shape[1] == 1 else x.T

    def _decode(self, a: int, b: int) -> np.ndarray:
        """Samples ``a:b``; where decoding fails part-way (a cut FLAC), what came before, and a warning."""
        try:
            self.file.seek(a)
            x = self.file.read(b - a, dtype="float32", always_2d=True)
            if x.shape[0] == b - a:
                return x
        except (sf.LibsndfileError, RuntimeError, ValueError):
            pass
        # Find how far it decodes, block by block.
        pieces, at = [], a
        try:
            self.file.seek(a)
            while at < b:
                piece = self.file.read(min(4096, b - at), dtype="float32", always_2d=True)
                if piece.shape[0] == 0:
                    break
                pieces.append(piece)
                at += piece.shape[0]
        except (sf.LibsndfileError, RuntimeError, ValueError) as err:
            if at == 0:
                raise AudioError(self.path, f"cannot be read as audio ({err})") from None
        self.readable = at
        self.warnings.append(f"{self.path}: is truncated or damaged: {self.frames} samples announced, {at} decode; "
                             "the rest of the stems is silence")
        return np.concatenate(pieces) if pieces else np.zeros((0, self.channels), np.float32)

    def close(self) -> None:
        self.file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
