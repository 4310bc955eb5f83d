"""lightsaft_infer: CPU inference for LightSAFT / LaSAFT conditioned music source separation.

Public API::

    from lightsaft_infer import Separator
    sep = Separator.from_file("weights/default.safetensors", backend="onnx")
    stems = sep.separate(audio, 44100)  # {"vocals": ..., "drums": ..., "bass": ..., "other": ...}
"""

from .config import SOURCES, ModelConfig
from .errors import AudioError, LightsaftError, UnsafeCheckpointError, WeightFileError
from .separator import FileResult, Separator

__all__ = ["Separator", "FileResult", "ModelConfig", "SOURCES", "LightsaftError", "AudioError",
           "WeightFileError", "UnsafeCheckpointError"]  # fmt: skip
__version__ = "0.1.0"
