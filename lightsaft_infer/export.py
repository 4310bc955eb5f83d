"""ONNX export of the frozen all-sources graph (needs torch) and reading it back (needs only onnx runtime)."""

from __future__ import annotations

import os
import warnings

from . import configs
from .config import ModelConfig
from .errors import WeightFileError
from .files import atomic_path, make_dirs, publish, remove_empty
from .weights import FORMAT, FORMAT_VERSION

OPSET = 17
#: Name of the symbolic frame axis of ``spec`` and ``stems`` (sessions fix it per window size).
FRAMES_AXIS = "frames"


def export_onnx(weights_path, onnx_path) -> None:
    """Export ``weights_path`` (safetensors) to ``onnx_path``: input ``spec (B, 4, T, F)``, output ``stems (B, S, 4, T, F)``.

    The model configuration goes into the ONNX metadata so the file describes itself.
    """
    import onnx
    import torch

    from .families import build_network, frozen_graph
    from .weights import load_weights

    config, tensors = load_weights(weights_path)
    graph = frozen_graph(build_network(config, tensors, weights_path))
    example = torch.zeros(1, 4, 2 * config.frame_multiple, config.n_bins)
    created = make_dirs(os.path.dirname(os.path.abspath(onnx_path)))
    tmp = atomic_path(onnx_path, ".onnx")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter announces its deprecation
            torch.onnx.export(
                graph, (example,), tmp, input_names=["spec"], output_names=["stems"], opset_version=OPSET,
                dynamic_axes={"spec": {2: FRAMES_AXIS}, "stems": {3: FRAMES_AXIS}}, dynamo=False,
            )  # fmt: skip
        model = onnx.load(tmp)
        for key, value in {"format": FORMAT, "format_version": FORMAT_VERSION, "config": config.to_json()}.items():
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(model, tmp)
        publish(tmp, onnx_path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
            remove_empty(created)


def onnx_session(path, options=None):
    """An ONNX Runtime CPU session, or :class:`WeightFileError` naming ``path``."""
    import onnxruntime as ort

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise WeightFileError(path, "no such ONNX file")
    try:
        return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    except Exception as err:  # ORT raises its own exception types for bad models
        raise WeightFileError(path, f"ONNX Runtime cannot load this model ({runtime_reason(err)})") from None


def runtime_reason(err: BaseException, limit: int = 600) -> str:
    """A runtime's error as one line. Long messages keep their head and their tail: ONNX Runtime puts
    the C++ location and signature first and the cause last."""
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= limit else f"{text[:150]} ... {text[-(limit - 155):]}"


def check_io(path, config: ModelConfig, inputs: list, outputs: list) -> None:
    """Refuse an export whose inputs/outputs (``[(name, shape)]``, symbolic dimensions as strings or
    None) cannot be ``spec (B, 4, T, F) -> stems (B, S, 4, T, F)`` for ``config``."""

    def fits(shape, want):
        return len(shape) == len(want) and all(w is None or not isinstance(d, int) or d == w for d, w in zip(shape, want))

    bins, sources = config.n_bins, len(config.sources)
    if len(inputs) != 1 or not fits(inputs[0][1], (None, 4, None, bins)):
        raise WeightFileError(path, f"the ONNX graph takes {[s for _, s in inputs]}, not one spectrogram "
                                    f"(batch, 4, frames, {bins}) as its configuration says")
    if len(outputs) != 1 or not fits(outputs[0][1], (None, sources, 4, None, bins)):
        raise WeightFileError(path, f"the ONNX graph gives {[s for _, s in outputs]}, not stems "
                                    f"(batch, {sources}, 4, frames, {bins}) as its configuration says")


def onnx_config(session, path) -> ModelConfig:
    """The configuration stored in an exported model's metadata."""
    meta = session.get_modelmeta().custom_metadata_map
    if meta.get("format") != FORMAT:
        raise WeightFileError(path, f"not a {FORMAT} ONNX export (metadata 'format' is {meta.get('format')!r})")
    return configs.from_json(meta.get("config"), path)


def read_onnx_config(path) -> ModelConfig:
    """The configuration in an export's metadata, read through an unoptimised session (~0.1 s)."""
    import onnxruntime as ort

    light = ort.SessionOptions()
    light.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return onnx_config(onnx_session(path, light), path)
