"""The network runs beside the main thread, so that SIGTERM and Ctrl-C are answered in milliseconds.

Python runs a signal handler only between bytecodes of the main thread; a window inside ONNX Runtime,
OpenVINO or torch is one C call of seconds, and a scheduler's SIGTERM used to wait for it (3.4-5.5 s
measured on 2 cores). :func:`interruptible` hands the call to a daemon worker thread and waits in short
slices, so the handler runs at once and the stems being written are removed while the window finishes
unseen in the background (its result is dropped, and its thread ends after it).
"""

from __future__ import annotations

import os
import queue
import sys
import threading

#: Longest wait between two chances for a signal handler to run (s).
SLICE = 0.05


class _Worker:
    """One thread that runs the calls handed to it, in order, until it is retired."""

    def __init__(self):
        self.calls: queue.SimpleQueue = queue.SimpleQueue()
        self.busy = False
        threading.Thread(target=self._loop, name="lightsaft-network", daemon=True).start()

    def _loop(self):
        while True:
            call = self.calls.get()
            if call is None:  # retired: a caller gave up on this thread's call
                return
            fn, args, box, done = call
            self.busy = True
            try:
                box.append((True, fn(*args)))
            except BaseException as err:  # handed back to the caller, never lost in this thread
                box.append((False, err))
            self.busy = False
            done.set()


_worker: _Worker | None = None
_retired: list = []  # workers whose caller gave up while their call ran
_lock = threading.Lock()


def interruptible(fn, *args):
    """``fn(*args)``, run so that the main thread stays free for signal handlers. Off the main thread (a Dask
    worker, a server's request thread) it is a plain call."""
    global _worker
    if threading.current_thread() is not threading.main_thread():
        return fn(*args)
    with _lock:
        if _worker is None:
            _worker = _Worker()
        worker = _worker
    box: list = []
    done = threading.Event()
    worker.calls.put((fn, args, box, done))
    try:
        while not done.wait(SLICE):
            pass
    except BaseException:
        # The caller gives up (a signal, the harness's alarm): the call runs on unseen and its thread ends
        # after it; the next call gets a fresh thread instead of queueing behind an abandoned window.
        with _lock:
            if _worker is worker:
                _worker = None
            _retired.append(worker)
        worker.calls.put(None)
        raise
    ok, value = box[0]
    if ok:
        return value
    raise value


def leave(code: int) -> None:
    """End the process with ``code`` now if a network call is still running beside the main thread (after the
    caller has cleaned up): an interpreter shutting down under a running ONNX Runtime call aborts."""
    if any(w.busy for w in _retired + [_worker] if w is not None):
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)
