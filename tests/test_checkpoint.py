"""The converter reads the authors' checkpoints and refuses pickles that would run code."""

import os
import pickle
import zipfile

import numpy as np
import pytest

from lightsaft_infer import cli
from lightsaft_infer.checkpoint import convert_checkpoint, read_checkpoint
from lightsaft_infer.errors import UnsafeCheckpointError, WeightFileError
from lightsaft_infer.weights import load_weights, save_weights

from .conftest import FIXTURES


def _archive(path, payload: bytes):
    """A zip-format 'checkpoint' whose data.pkl is ``payload``."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("evil/data.pkl", payload)
        z.writestr("evil/byteorder", "little")
    return path


class _RunsShell:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_calling_os_system_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    ckpt = _archive(tmp_path / "evil.ckpt", pickle.dumps({"state_dict": _RunsShell(marker)}, protocol=2))
    with pytest.raises(UnsafeCheckpointError) as err:
        read_checkpoint(ckpt)
    assert not marker.exists()
    assert str(err.value).startswith(str(ckpt)) and "system" in str(err.value) and "\n" not in str(err.value)


def test_calling_a_lightning_class_is_refused(tmp_path):
    # GLOBAL pytorch_lightning... ; an empty tuple; REDUCE: references are allowed, calls are not
    payload = b"\x80\x02cpytorch_lightning.callbacks.model_checkpoint\nModelCheckpoint\n)R."
    ckpt = _archive(tmp_path / "call.ckpt", payload)
    with pytest.raises(UnsafeCheckpointError, match="calls pytorch_lightning"):
        read_checkpoint(ckpt)


def test_convert_cli_refuses_the_malicious_file(tmp_path, capsys):
    marker = tmp_path / "pwned"
    ckpt = _archive(tmp_path / "evil.ckpt", pickle.dumps(_RunsShell(marker), protocol=4))
    out = tmp_path / "w.safetensors"
    assert cli.main(["convert", str(ckpt), "-o", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(ckpt) in err and "refused" in err
    assert not marker.exists() and not out.exists() and os.listdir(tmp_path) == ["evil.ckpt"]


@pytest.mark.parametrize("name", FIXTURES)
def test_fixture_checkpoints_convert(name, upstream):
    config, tensors = convert_checkpoint(upstream / f"{name}.ckpt")
    ckpt = read_checkpoint(upstream / f"{name}.ckpt")
    hp = ckpt["hyper_parameters"]
    assert (config.n_fft, config.num_frame, config.n_blocks, config.num_tdfs) == (hp["n_fft"], hp["num_frame"], hp["n_blocks"], hp["num_tdfs"])
    assert config.block == ("lasaft" if name == "lasaft_paper" else "lightsaft")
    key = "spec2spec.first_conv.0.weight"
    np.testing.assert_array_equal(tensors["first_conv.0.weight"], ckpt["state_dict"][key])


def test_torch_reads_the_same_tensors(upstream):
    """Cross-check our unpickler against torch's own loader (allow-listing the one Lightning class)."""
    torch = pytest.importorskip("torch")
    path = upstream / "lightsaft_small.ckpt"

    class Stub:  # stands in for the Lightning callback class used as a dict key
        pass

    import sys
    import types

    mods = ["pytorch_lightning", "pytorch_lightning.callbacks", "pytorch_lightning.callbacks.model_checkpoint"]
    for m in mods:
        sys.modules.setdefault(m, types.ModuleType(m))
    sys.modules[mods[-1]].ModelCheckpoint = Stub
    try:
        theirs = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
    finally:
        for m in mods:
            sys.modules.pop(m, None)
    _, ours = convert_checkpoint(path)
    for k, v in theirs.items():
        if k.startswith("spec2spec.") and "num_batches_tracked" not in k:
            np.testing.assert_array_equal(ours[k[len("spec2spec."):]], v.numpy())


def test_non_checkpoints_are_refused(tmp_path):
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a zip at all")
    with pytest.raises(WeightFileError, match="not a zip-format"):
        read_checkpoint(junk)
    with pytest.raises(WeightFileError, match="no such file"):
        read_checkpoint(tmp_path / "missing.ckpt")


def test_weight_file_without_or_with_bad_config(tmp_path, small_weights):
    from safetensors.numpy import save_file

    config, tensors = load_weights(small_weights)
    bare = tmp_path / "bare.safetensors"
    save_file({"x": np.zeros(2, np.float32)}, str(bare))
    with pytest.raises(WeightFileError, match="not a lightsaft-infer weight file"):
        load_weights(bare)
    nocfg = tmp_path / "nocfg.safetensors"
    save_file({"x": np.zeros(2, np.float32)}, str(nocfg), metadata={"format": "lightsaft-infer", "format_version": "1"})
    with pytest.raises(WeightFileError, match="carries no model configuration"):
        load_weights(nocfg)
    bad = tmp_path / "bad.safetensors"
    d = config.to_dict()
    d["num_frame"] = 250  # not a multiple of 16
    save_file({"x": np.zeros(2, np.float32)}, str(bad), metadata={"format": "lightsaft-infer", "format_version": "1", "config": __import__("json").dumps(d)})
    with pytest.raises(WeightFileError, match="num_frame 250 must be a multiple of 16"):
        load_weights(bad)


def test_weights_that_do_not_fit_the_config(tmp_path, small_weights):
    from lightsaft_infer.backends import TorchBackend

    config, tensors = load_weights(small_weights)
    path = tmp_path / "mismatch.safetensors"
    save_weights(path, config, {k: v for k, v in tensors.items() if k != "last_conv.0.bias"})
    with pytest.raises(WeightFileError, match="missing"):
        TorchBackend.from_file(path)
    tensors = dict(tensors, **{"last_conv.0.bias": np.zeros(5, np.float32)})
    save_weights(path, config, tensors)
    with pytest.raises(WeightFileError, match=r"last_conv.0.bias has shape \(5,\)"):
        TorchBackend.from_file(path)
