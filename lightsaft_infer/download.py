"""Fetch one file over HTTP(S) into a partial file, resumably, with every bound a hostile server needs.

Nothing here trusts the server: the body may not exceed the catalogue's size, a stalled or dripping
connection is cut, redirects are few and stay on http(s), and a Git LFS pointer or an HTML page in
place of the object is recognised and named. The caller checks the hash before anything parses the
bytes (:mod:`.models`); this module only moves them.
"""

from __future__ import annotations

import http.client
import os
import re
import socket
import time
import urllib.error
import urllib.request

from .errors import LightsaftError
from .files import write_problem

#: Seconds without data after which a download is called stalled (``$LIGHTSAFT_PULL_TIMEOUT``).
STALL_S = 60.0
#: A connection must deliver this many bytes per ``STALL_S`` seconds, or it is a drip, not a download.
MIN_PROGRESS = 64 << 10
MAX_REDIRECTS = 5
BLOCK = 256 << 10
USER_AGENT = "lightsaft-infer (model pull)"
_LFS_POINTER = re.compile(rb"^version https://git-lfs\.github\.com/spec/v\d")
_LFS_OID = re.compile(rb"oid sha256:([0-9a-f]{64})")
_LFS_SIZE = re.compile(rb"size (\d+)")


class DownloadError(LightsaftError):
    """A source that did not deliver the file: the URL and what it did instead. ``resumable``: the bytes
    received so far are a true prefix as far as the transfer knows (a stall, a lost connection)."""

    def __init__(self, url, problem, resumable: bool = False):
        super().__init__(url, problem)
        self.resumable = resumable


def stall_seconds() -> float:
    value = os.environ.get("LIGHTSAFT_PULL_TIMEOUT")
    try:
        seconds = float(value) if value else STALL_S
    except ValueError:
        seconds = -1.0
    if not 0.1 <= seconds <= 3600:
        raise LightsaftError(None, f"LIGHTSAFT_PULL_TIMEOUT must be seconds from 0.1 to 3600, not {value!r:.40}")
    return seconds


class _Redirects(urllib.request.HTTPRedirectHandler):
    """At most ``MAX_REDIRECTS`` hops, each to http(s) only (never file:, ftp: or data:)."""

    max_redirections = MAX_REDIRECTS
    max_repeats = 1

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if not newurl.lower().startswith(("http://", "https://")):
            raise DownloadError(req.full_url, f"redirects to {newurl!r:.120}, which is not http(s)")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _opener():
    # no FileHandler, FTPHandler or DataHandler: only the web
    handlers = [urllib.request.ProxyHandler(), urllib.request.HTTPHandler(), urllib.request.HTTPSHandler(),
                _Redirects(), urllib.request.HTTPDefaultErrorHandler(), urllib.request.HTTPErrorProcessor()]
    opener = urllib.request.OpenerDirector()
    for handler in handlers:
        opener.add_handler(handler)
    return opener


def what_it_is(head: bytes, content_type: str = "") -> str | None:
    """Why ``head`` (a body's first bytes) is not a checkpoint or config: a Git LFS pointer or an HTML page."""
    if _LFS_POINTER.match(head):
        oid, size = _LFS_OID.search(head), _LFS_SIZE.search(head)
        detail = ", ".join(x for x in (oid and f"oid sha256:{oid.group(1).decode()}",
                                       size and f"size {int(size.group(1)):,}") if x)
        return (f"answered with the Git LFS pointer ({detail}), not the object: "
                "LFS files are served by the host's media endpoint")
    start = head.lstrip()[:64].lower()
    if "text/html" in content_type.lower() or start.startswith((b"<!doctype html", b"<html", b"<head", b"<body")):
        return "answered with an HTML page, not the file (a login, error or landing page)"
    return None


def fetch(url: str, part: str, limit: int, stall: float, progress=None, expected: int | None = None) -> int:
    """Download ``url`` into the file ``part``, resuming from its current length; return the file's size.

    ``limit``: the most bytes the file may have; ``expected``: its exact size where known (for the
    progress bar and to skip a finished file); ``stall``: seconds without progress before giving up;
    ``progress(done, total)`` is called as bytes arrive. Raises :class:`DownloadError` naming the URL.
    """
    if not url.lower().startswith(("http://", "https://")):
        raise DownloadError(url, "only http and https sources are fetched")
    offset = os.path.getsize(part) if os.path.isfile(part) else 0
    if offset > limit:
        os.unlink(part)
        offset = 0
    if expected is not None and offset == expected:
        return offset
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = _opener().open(urllib.request.Request(url, headers=headers), timeout=stall)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:  # the partial file is no prefix the server knows: start again
            os.unlink(part)
            return fetch(url, part, limit, stall, progress, expected)
        if 300 <= err.code < 400:
            raise DownloadError(url, f"redirects in a loop or more than {MAX_REDIRECTS} times (HTTP {err.code})") from None
        raise DownloadError(url, f"HTTP {err.code} {err.reason}") from None
    except DownloadError:
        raise
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as err:
        reason = getattr(err, "reason", err)
        if isinstance(reason, (socket.timeout, TimeoutError)):
            raise DownloadError(url, f"stalled: no answer in {stall:g} s") from None
        raise DownloadError(url, f"cannot be reached ({' '.join(str(reason).split())[:160]})") from None
    with response:
        status = response.status
        resumed = status == 206
        if offset and resumed:
            content_range = response.headers.get("Content-Range", "")
            if not content_range.startswith(f"bytes {offset}-"):
                raise DownloadError(url, f"answered a resume from byte {offset:,} with {content_range!r:.60}")
        elif status != 200:
            raise DownloadError(url, f"HTTP {status}")
        start = offset if resumed else 0
        length = response.headers.get("Content-Length")
        if length is not None and length.isdigit() and start + int(length) > limit:
            raise DownloadError(url, f"announces {start + int(length):,} bytes; the catalogue's file has at most {limit:,}")
        content_type = response.headers.get("Content-Type", "")
        return _receive(response, url, part, start, limit, stall, progress, expected, content_type)


def _receive(response, url, part, start, limit, stall, progress, expected, content_type) -> int:
    done, mark, mark_time = start, start, time.monotonic()
    try:
        with open(part, "r+b" if start else "wb") as out:
            out.seek(start)
            out.truncate()
            while True:
                try:
                    chunk = response.read(min(BLOCK, limit + 1 - done))
                except (socket.timeout, TimeoutError):
                    raise DownloadError(url, f"stalled: no data for {stall:g} s at byte {done:,}", True) from None
                except (OSError, ValueError, http.client.HTTPException) as err:  # reset, or the body cut short
                    raise DownloadError(url, f"connection lost at byte {done:,} ({err})", True) from None
                if not chunk:
                    break
                if done == 0:
                    problem = what_it_is(chunk[:1024], content_type)
                    if problem:
                        raise DownloadError(url, problem)
                out.write(chunk)
                done += len(chunk)
                if done > limit:
                    raise DownloadError(url, f"sent more than {limit:,} bytes, the catalogue's size")
                now = time.monotonic()
                if done - mark >= MIN_PROGRESS:
                    mark, mark_time = done, now
                elif now - mark_time > stall:
                    raise DownloadError(url, f"stalled: under {MIN_PROGRESS >> 10} kB in {stall:g} s at byte {done:,}", True)
                if progress is not None:
                    progress(done, expected)
    except OSError as err:  # the cache's disk, not the server
        raise LightsaftError(part, write_problem(err, part)) from None
    return done
