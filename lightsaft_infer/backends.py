"""Backends: run the frozen all-sources graph on a batch of spectrogram windows.

Each backend maps ``spec (B, 4, T, n_fft/2+1)`` float32 to
``(B, S, 4, T, n_fft/2+1)`` float32 for the ``S`` sources of its config, in
the config's source order. ``torch`` runs :class:`~.network.SeparationGraph`
in fp32; ``onnx`` runs its ONNX export in ONNX Runtime and needs no torch;
``openvino-int8``, ``openvino-bf16`` and ``torch-bf16`` are fast paths, not
exact (their error is measured by the benchmark, ``evaluate`` and the tests):
the export quantised to int8 (``NAME.int8.xml``, about 3x the exact path on
the 2-core EPYC) and the ONNX export in bfloat16 (1.5x), both compiled by
OpenVINO without torch, and the torch graph under bfloat16 autocast (no
faster than ONNX Runtime's fp32 on that CPU, which has AVX512-BF16 but no AMX).
"""

from __future__ import annotations

import os
import pathlib
import threading

import numpy as np

from .config import ModelConfig
from .errors import LightsaftError, WeightFileError
from .threads import cpu_threads

BACKENDS = ("torch", "onnx", "openvino", "torch-bf16", "openvino-bf16", "openvino-int8")
#: Backends whose stems equal the reference path's (to 1e-4); the others trade accuracy for speed.
EXACT_BACKENDS = ("torch", "onnx", "openvino")
WEIGHTS_ENV = "LIGHTSAFT_WEIGHTS"
DEFAULT_MODEL = "default"
_PACKAGE = pathlib.Path(__file__).resolve().parent
#: Where the default model lives: ``weights/`` of a source checkout (or an editable install), else the
#: copy a regular install puts inside the package (``setup.py`` ships ``weights/`` as ``default_model``).
DEFAULT_WEIGHTS_DIRS = (_PACKAGE.parent / "weights", _PACKAGE / "default_model")


class Backend:
    """Interface: ``config``, ``name`` and ``__call__(spec) -> stems spectrograms``."""

    name = "?"
    config: ModelConfig

    def __call__(self, spec: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, config: ModelConfig, tensors: dict, threads: int | None = None, path=None,
                 precision: str = "fp32"):
        import torch

        from .families import build_network, frozen_graph

        if precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be fp32 or bf16, not {precision!r}")
        self.config, self._torch, self.precision, self.path = config, torch, precision, path
        if precision == "bf16":
            self.name = "torch-bf16"
        torch.set_num_threads(cpu_threads(threads))
        self.graph = frozen_graph(build_network(config, tensors, path))

    @classmethod
    def from_file(cls, path, threads=None, precision: str = "fp32"):
        from .weights import load_weights

        config, tensors = load_weights(path)
        return cls(config, tensors, threads, path, precision)

    def __call__(self, spec):
        torch = self._torch
        x = torch.from_numpy(np.ascontiguousarray(spec, dtype=np.float32))
        with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=self.precision == "bf16"):
            return self.graph(x).float().numpy()


def onnx_session_options(threads: int, frames: int | None = None):
    """ONNX Runtime options for the exact path; ``frames`` fixes the symbolic frame axis (see :meth:`OnnxBackend.session`)."""
    import onnxruntime as ort

    from .export import FRAMES_AXIS

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if frames is not None:
        options.add_free_dimension_override_by_name(FRAMES_AXIS, frames)
    # Trained weights can produce denormal activations, which are slow on x86; flushing them
    # changes values below 1e-38 only.
    options.add_session_config_entry("session.set_denormal_as_zero", "1")
    # The memory-pattern planner allocates a second full set of buffers on the second run
    # (peak RSS 911 MB instead of 571 MB for a 20 s song here) and was not faster.
    options.enable_mem_pattern = False
    return options


class _PerWindowSize(Backend):
    """A backend whose runtime compiles the export for one frame count at a time.

    The export keeps the frame axis symbolic. Fixing it per session lets the
    runtime's shape inference see through the decoders' ConvTranspose: ONNX
    Runtime then fuses the dense TFC sums into the convolutions there too (40
    Adds per decoder level otherwise), 1.42-1.56 -> 1.30-1.32 s per window of
    four sources, identical output (measured 2026-11-21). The model's own
    window is compiled at load; other sizes (tests, odd callers) on first use.
    """

    #: Frame counts kept compiled besides the model's window.
    MAX_EXTRA_SESSIONS = 1

    def __init__(self, path, threads: int | None = None, compile_window: bool = True):
        from .export import read_onnx_config

        self.path, self.threads = path, cpu_threads(threads)
        self.config = read_onnx_config(path)
        self._sessions = {}
        if compile_window:  # else on first use (a caller that runs other window sizes only)
            self.session(self.config.num_frame)

    def _compile(self, frames: int):
        """A callable ``(1, 4, frames, F) float32 -> (1, S, 4, frames, F)``."""
        raise NotImplementedError

    def session(self, frames: int):
        """The compiled model for windows of ``frames`` frames."""
        if frames not in self._sessions:
            extra = [f for f in self._sessions if f != self.config.num_frame]
            if len(extra) >= self.MAX_EXTRA_SESSIONS:  # bound the memory: drop the oldest odd size
                del self._sessions[extra[0]]
            self._sessions[frames] = self._compile(frames)
        return self._sessions[frames]

    def __call__(self, spec):
        # The export takes one window (batch 1): its graph runs the sources one after another.
        from .export import runtime_reason

        spec = np.ascontiguousarray(spec, dtype=np.float32)
        run = self.session(spec.shape[2])
        want = (1, len(self.config.sources)) + spec.shape[1:]
        out = []
        for b in range(len(spec)):
            try:
                y = run(spec[b : b + 1])
            except Exception as err:  # a graph that loads but cannot run what its configuration says
                raise WeightFileError(self.path, f"cannot run this model ({runtime_reason(err)})") from None
            if tuple(y.shape) != want:
                raise WeightFileError(self.path, f"the model gives stems of shape {tuple(y.shape)}, not {want}")
            out.append(y)
        return np.concatenate(out)


class OnnxBackend(_PerWindowSize):
    """The exact path without torch: the ONNX export in ONNX Runtime (fp32)."""

    name = "onnx"

    def _compile(self, frames):
        from .export import check_io, onnx_session

        session = onnx_session(self.path, onnx_session_options(self.threads, frames))
        check_io(self.path, self.config, [(i.name, i.shape) for i in session.get_inputs()],
                 [(o.name, o.shape) for o in session.get_outputs()])  # fmt: skip
        name = session.get_inputs()[0].name
        return lambda spec: session.run(None, {name: spec})[0]


class OpenVinoBackend(_PerWindowSize):
    """A fast path without torch: the ONNX export compiled by OpenVINO with bfloat16 inference.

    On a CPU with AVX512-BF16 (or AMX) OpenVINO runs convolutions and matrix
    products in bfloat16 with fp32 accumulation: 1.47 -> 0.99 s per window of
    four sources on the 2-core EPYC (2026-11-21), where torch's bf16 autocast
    gained nothing. Not exact: the benchmark measures its SDR change. Needs
    ``pip install 'lightsaft-infer[openvino]'``; compiling takes ~4 s.
    """

    name = "openvino-bf16"
    #: Without bfloat16 this path would be ONNX Runtime's fp32 computation, only slower to set up.
    NEEDS_BF16 = True
    #: Compute in bfloat16 where the CPU can (the fp32 path never does).
    USES_BF16 = True

    def __init__(self, path, threads: int | None = None, compile_window: bool = True):
        import openvino as ov

        self._core = ov.Core()
        self._bf16 = self.USES_BF16 and _computes_bf16(self._core)
        if not self._bf16 and self.NEEDS_BF16:
            raise LightsaftError(None, f"the {self.name} backend needs a CPU with bfloat16 support (AVX512-BF16 or AMX); use --backend onnx")
        self._model = None
        super().__init__(path, threads, compile_window)

    def _model_path(self):
        return self.path

    def _compile(self, frames):
        if self._model is None:
            from .export import runtime_reason

            try:
                self._model = self._core.read_model(os.fspath(self._model_path()))
            except Exception as err:
                raise WeightFileError(self._model_path(), f"OpenVINO cannot read this model ({runtime_reason(err)})") from None
        from .export import check_io, runtime_reason

        model = self._model.clone()
        check_io(self._model_path(), self.config, _ports(model.inputs), _ports(model.outputs))
        try:
            model.reshape([1, 4, frames, self.config.n_bins])
        except Exception as err:
            raise WeightFileError(self._model_path(), f"OpenVINO cannot shape this model for a window ({runtime_reason(err)})") from None
        try:
            compiled = self._core.compile_model(model, "CPU", {
                "INFERENCE_PRECISION_HINT": "bf16" if self._bf16 else "f32", "INFERENCE_NUM_THREADS": self.threads,
                "PERFORMANCE_HINT": "LATENCY",
                # the snippets code generator only lengthens compilation here (3.6 instead of 4.0 s), not faster
                "SNIPPETS_MODE": "DISABLE",
            })  # fmt: skip
        except Exception as err:  # OpenVINO's own exception types
            raise LightsaftError(self._model_path(), f"OpenVINO cannot compile this model ({runtime_reason(err)})") from None
        return _Requests(compiled)


class _Requests:
    """Runs windows on one OpenVINO compiled model. A window whose caller gave up (SIGTERM, the grader's
    per-song alarm: :mod:`.signals` leaves it running unseen) still holds its infer request, and OpenVINO
    refuses a second ``infer`` on a busy request ("Infer Request is busy"); the next window then takes a
    fresh request, so that one abandoned window never fails the songs after it."""

    def __init__(self, compiled):
        self.compiled = compiled
        self.current = (compiled.create_infer_request(), threading.Lock())

    def __call__(self, spec):
        request, lock = self.current
        if not lock.acquire(blocking=False):  # busy with an abandoned window: let it finish on its own
            request, lock = self.current = (self.compiled.create_infer_request(), threading.Lock())
            lock.acquire()
        try:
            return request.infer({0: spec})[0].copy()
        finally:
            lock.release()


class OpenVinoFp32Backend(OpenVinoBackend):
    """The ONNX export compiled by OpenVINO in fp32 (``INFERENCE_PRECISION_HINT`` f32): an exact path,
    with OpenVINO's own choice of convolution kernels instead of ONNX Runtime's."""

    name = "openvino"
    NEEDS_BF16 = False
    USES_BF16 = False


def _ports(ports) -> list:
    """OpenVINO ports as ``[(name, shape)]`` with ``None`` for dynamic dimensions."""
    return [(",".join(p.get_names()), [d.get_length() if d.is_static else None for d in p.get_partial_shape()])
            for p in ports]  # fmt: skip


class OpenVinoInt8Backend(OpenVinoBackend):
    """The fastest path: ``NAME.int8.xml``, the export quantised to int8 by ``training/quantize.py``
    (NNCF, calibrated on music; ``first_conv``/``last_conv``, the first TFC block and the elementwise
    rest in bfloat16).

    0.50-0.55 against 0.93-0.96 s per window for ``openvino-bf16`` on the 2-core EPYC (AVX512-VNNI,
    2026-11-23); its stems differ more from the exact path's than bf16's and score 0.163 dB lower in
    mean MDX SDR over the 50 synthetic test songs with the step-15900 default weights (step 14500's:
    0.293; step 13100's: 0.232; step 11700's: 0.245; step 10200's: 0.285; step 8400's: 0.261; step 4600's: 0.090).
    """

    name = "openvino-int8"
    NEEDS_BF16 = False  # the float layers then run in fp32
    SUFFIX = ".int8.xml"

    def _model_path(self):
        return int8_path(self.path)

    def _compile(self, frames):
        fresh = self._model is None
        run = super()._compile(frames)
        if fresh:
            check_int8_source(self._model, self._model_path())
        return run


#: Runtime-info key of the SHA-256 (``weights.weights_digest``) of the fp32 weights an int8 IR was made from.
INT8_DIGEST_KEY = ("lightsaft", "fp32_weights_sha256")


def check_int8_source(model, path) -> str | None:
    """The digest recorded in an int8 IR (``model``: an ``openvino.Model`` read from ``path``); a
    :class:`WeightFileError` when ``NAME.safetensors`` beside it holds other weights (the int8 model
    would separate with a network other than the one the user chose)."""
    if not model.has_rt_info(list(INT8_DIGEST_KEY)):
        return None
    recorded = model.get_rt_info(list(INT8_DIGEST_KEY)).astype(str)
    source = pathlib.Path(path).with_name(pathlib.Path(path).name[: -len(OpenVinoInt8Backend.SUFFIX)] + ".safetensors")
    if source.is_file():
        from .weights import load_weights, weights_digest

        if weights_digest(load_weights(source)[1]) != recorded:
            raise WeightFileError(path, f"made from other weights than {source.name} (regenerate it: python -m training.quantize)")
    return recorded


def int8_path(path) -> pathlib.Path:
    """``NAME.int8.xml`` beside ``NAME.onnx`` / ``NAME.safetensors``."""
    path = pathlib.Path(path)
    return path.with_name(path.stem + OpenVinoInt8Backend.SUFFIX)


def default_weights() -> pathlib.Path:
    """``$LIGHTSAFT_WEIGHTS`` if set, else the default model wherever the package is installed:
    ``weights/default.safetensors`` in a checkout, the package's own copy after ``pip install .``."""
    env = os.environ.get(WEIGHTS_ENV)
    if env:
        return pathlib.Path(env)
    for name in (f"{DEFAULT_MODEL}.safetensors", f"{DEFAULT_MODEL}.onnx"):  # a submission may carry the export only
        found = next((d / name for d in DEFAULT_WEIGHTS_DIRS if (d / name).is_file()), None)
        if found is not None:
            return found
    return DEFAULT_WEIGHTS_DIRS[0] / f"{DEFAULT_MODEL}.safetensors"


def named_weights(value) -> pathlib.Path:
    """A weight path, or a catalogue name's cached ``NAME.onnx`` (never downloads: :func:`.models.resolve`)."""
    from .models import looks_like_path, resolve

    return pathlib.Path(value if looks_like_path(value) else resolve(value))


def module_available(name: str) -> bool:
    """Whether ``import name`` can work (without importing it)."""
    import importlib.util
    import sys

    if name in sys.modules:
        return sys.modules[name] is not None  # None: import blocked on purpose
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def torch_available() -> bool:
    return module_available("torch")


def _computes_bf16(core) -> bool:
    """Whether OpenVINO's CPU device (``core``: an ``openvino.Core``) computes in bfloat16 here."""
    return "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def openvino_bf16_available() -> bool:
    """OpenVINO is installed and this CPU computes in bfloat16 (what makes the openvino-bf16 path fast)."""
    if not module_available("openvino"):
        return False
    import openvino as ov

    return _computes_bf16(ov.Core())


def open_backend(path=None, backend: str = "auto", threads: int | None = None) -> Backend:
    """Open weights for a backend.

    ``path`` may name ``NAME.safetensors`` or ``NAME.onnx``; the other file of
    the pair is looked up beside it when the backend needs it. ``auto`` takes
    ONNX Runtime when ``NAME.onnx`` exists or torch is missing, else torch.
    """
    path = named_weights(path if path is not None else default_weights())
    if backend not in BACKENDS + ("auto",):
        raise ValueError(f"backend must be one of {BACKENDS + ('auto',)}, not {backend!r}")
    st, ox = path.with_suffix(".safetensors"), path.with_suffix(".onnx")
    if path.suffix not in (".safetensors", ".onnx"):
        raise WeightFileError(path, "weight files end in .safetensors or .onnx (convert a checkpoint with 'lightsaft-infer convert')")
    if not path.is_file():
        hint = "" if path != default_weights() else f"; no default model yet: pass --weights or set {WEIGHTS_ENV}"
        raise WeightFileError(path, f"no such weight file{hint}")
    if backend == "auto":
        backend = "onnx" if ox.is_file() or not torch_available() else "torch"
    if backend in ("onnx", "openvino", "openvino-bf16", "openvino-int8"):
        if not ox.is_file():
            raise WeightFileError(ox, "no ONNX export beside the weights (run 'lightsaft-infer export' or 'convert --onnx')")
        if backend == "onnx":
            return OnnxBackend(ox, threads)
        if not module_available("openvino"):
            raise LightsaftError(None, f"the {backend} backend needs OpenVINO: pip install 'lightsaft-infer[openvino]', or use --backend onnx")
        if backend == "openvino-bf16":
            return OpenVinoBackend(ox, threads)
        if backend == "openvino":
            return OpenVinoFp32Backend(ox, threads)
        if not int8_path(ox).is_file():
            raise WeightFileError(int8_path(ox), "no int8 model beside the weights (make one with 'python -m training.quantize')")
        return OpenVinoInt8Backend(ox, threads)
    if not torch_available():
        raise WeightFileError(path, f"the {backend} backend needs PyTorch: pip install 'lightsaft-infer[torch]', or use --backend onnx")
    if not st.is_file():
        raise WeightFileError(st, "no .safetensors weights beside the ONNX file for the torch backend")
    if backend == "torch-bf16":
        from .cpu import has_bf16

        if not has_bf16():  # torch then runs bfloat16 convolutions on a scalar GEMM: ~12x slower than fp32
            raise LightsaftError(None, "the torch-bf16 backend needs a CPU with bfloat16 support (AVX512-BF16 or AMX); "
                                       "without it torch's bf16 is about 12x slower than fp32: use --backend onnx")
    return TorchBackend.from_file(st, threads, "bf16" if backend == "torch-bf16" else "fp32")


def default_fast_backend(path=None, exact: str = "onnx") -> str | None:
    """The fastest path these weights can take here: ``openvino-int8`` (OpenVINO and ``NAME.int8.xml``),
    else ``openvino-bf16`` (OpenVINO and a bfloat16 CPU), else ``torch-bf16`` behind the torch backend on a
    bfloat16 CPU (without one, torch's bf16 convolutions run a scalar GEMM, ~12x slower than fp32).
    Whatever is named here is also timed at setup and dropped when it is not faster than the exact path
    (:meth:`~.separator.Separator.drop_slower_paths`)."""
    from .cpu import has_bf16

    path = named_weights(path if path is not None else default_weights())
    if module_available("openvino") and int8_path(path).is_file():
        return "openvino-int8"
    if openvino_bf16_available():
        return "openvino-bf16"
    return "torch-bf16" if exact == "torch" and torch_available() and has_bf16() else None
