"""Crafted and broken weight files: each is refused in one line naming the file, in seconds and bounded
memory, before any output is written; nothing in them is executed."""

import json
import pickle
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import soundfile as sf

from lightsaft_infer import cli
from lightsaft_infer.export import runtime_reason

from .conftest import REPO

MDX = {"n_fft": 2048, "hop_length": 1024, "num_frame": 256, "n_blocks": 9, "internal_channels": 16,
       "n_internal_layers": 5, "kernel_size_t": 3, "kernel_size_f": 3, "bn_factor": 16, "min_bn_units": 16,
       "tfc_tdf_bias": False, "num_tdfs": 16, "dk": 64, "embedding_dim": 64}  # fmt: skip
BLOCK_TENSOR = "spec2spec.encoders.0.LaSAFT_bn_layer.weight"


# -- a minimal torch-format archive, written opcode by opcode (no torch needed) ----------------------
def _op(obj) -> bytes:
    return pickle.dumps(obj, protocol=2)[2:-1]  # the object's opcodes without PROTO and STOP


def _global(module, name) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _tensor(key, numel, offset, size, stride) -> bytes:
    storage = b"(" + _op("storage") + _global("torch", "FloatStorage") + _op(key) + _op("cpu") + _op(numel) + b"tQ"
    return (_global("torch._utils", "_rebuild_tensor_v2") + b"(" + storage + _op(offset) + _op(tuple(size))
            + _op(tuple(stride)) + b"\x89N" + b"tR")  # fmt: skip


def _ckpt(path, tensor: bytes, storages: dict, hp=None, compress=zipfile.ZIP_STORED):
    payload = (b"\x80\x02}(" + _op("state_dict") + b"}(" + _op(BLOCK_TENSOR) + tensor + b"u"
               + _op("hyper_parameters") + _op(hp if hp is not None else MDX) + b"u.")  # fmt: skip
    with zipfile.ZipFile(path, "w", compression=compress) as z:
        z.writestr("archive/data.pkl", payload)
        z.writestr("archive/byteorder", "little")
        for key, data in storages.items():
            z.writestr(f"archive/data/{key}", data)
    return path


def _convert_in_child(path, tmp_path):
    """``lightsaft-infer convert`` in a fresh process: (exit code, stderr, peak RSS in MB, seconds)."""
    # peak RSS from VmHWM: ru_maxrss of a child can carry its parent's high-water mark across exec
    code = ("import re, sys, time; from lightsaft_infer import cli; t = time.perf_counter(); "
            f"rc = cli.main(['convert', {str(path)!r}, '-o', {str(tmp_path / 'out.safetensors')!r}]); "
            "hwm = int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)); "
            "print(f'RSS {hwm / 1024:.0f} {time.perf_counter() - t:.2f}'); sys.exit(rc)")  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    rss, seconds = proc.stdout.split("RSS ")[1].split()
    return proc.returncode, proc.stderr.strip(), float(rss), float(seconds)


FLOATS16 = np.arange(16, dtype="<f4").tobytes()
CRAFTED = {
    # (tensor opcodes, storages, fragment of the message)
    "huge stride on a size-1 dimension": (lambda: _tensor("0", 16, 0, (1,), (2**70,)), {"0": FLOATS16}, "not a count"),
    "size 2**64 with stride 0": (lambda: _tensor("0", 16, 0, (2**64,), (0,)), {"0": FLOATS16}, "not a count"),
    "32768 x 32768 view of 16 floats": (lambda: _tensor("0", 16, 0, (32768, 32768), (0, 0)), {"0": FLOATS16}, "size of 32768"),
    "storage entry larger than claimed": (lambda: _tensor("0", 4, 0, (4,), (1,)), {"0": bytes(64 << 20)}, "expected"),
    "claims a 4 GiB storage": (lambda: _tensor("0", 2**30, 0, (4,), (1,)), {"0": FLOATS16}, "expected"),
}


@pytest.mark.parametrize("case", sorted(CRAFTED))
def test_crafted_checkpoint_tensors_are_refused_fast_and_small(case, tmp_path):
    make, storages, fragment = CRAFTED[case]
    # the 64 MB entry compresses to ~64 kB: a zip bomb in miniature, refused before it is inflated
    path = _ckpt(tmp_path / "crafted.ckpt", make(), storages, compress=zipfile.ZIP_DEFLATED)
    code, err, rss, seconds = _convert_in_child(path, tmp_path)
    assert code == 1 and len(err.splitlines()) == 1 and str(path) in err and fragment in err, err
    assert "Traceback" not in err and seconds < 5 and rss < 400, (rss, seconds)
    assert not (tmp_path / "out.safetensors").exists()


@pytest.mark.parametrize("value", [2000000000000000001, 10**9 + 1])
def test_absurd_configuration_in_a_checkpoint_is_refused_at_once(value, tmp_path):
    path = _ckpt(tmp_path / "blocks.ckpt", _tensor("0", 16, 0, (16,), (1,)), {"0": FLOATS16}, {**MDX, "n_blocks": value})
    code, err, rss, seconds = _convert_in_child(path, tmp_path)
    assert code == 1 and len(err.splitlines()) == 1 and "n_blocks" in err and "outside what this architecture" in err, err
    assert seconds < 5, seconds


def _safetensors(path, config: dict, tensors=None):
    from safetensors.numpy import save_file

    config = {"block": "lightsaft", **MDX, **config}
    save_file(tensors or {"x": np.zeros(4, np.float32)}, str(path),
              metadata={"format": "lightsaft-infer", "format_version": "1", "config": json.dumps(config)})  # fmt: skip
    return path


@pytest.mark.parametrize("config,fragment", [
    ({"n_blocks": 2000000000000000001}, "n_blocks"), ({"n_blocks": 10**9 + 1}, "n_blocks"),
    ({"internal_channels": 100000}, "internal_channels"), ({"num_frame": 2**40}, "num_frame"),
    ({"n_fft": 16384, "num_frame": 4096, "internal_channels": 512}, "values per window"),
])  # fmt: skip
def test_absurd_configuration_in_weights_is_refused_by_every_command(config, fragment, tmp_path, capsys):
    path = _safetensors(tmp_path / "absurd.safetensors", config)
    song = tmp_path / "s.wav"
    sf.write(song, np.zeros((4410, 2), np.float32), 44100)
    for args in (["info", str(path)], ["separate", str(song), "-o", str(tmp_path / "out"), "-w", str(path), "--backend", "torch"],
                 ["export", str(path)]):  # fmt: skip
        assert cli.main(args) == 1, args
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and str(path) in err and fragment in err, (args, err)
    assert not (tmp_path / "out").exists() and not (tmp_path / "absurd.onnx").exists()


@pytest.mark.parametrize("kind", ["int64 tensors", "NaN weights"])
def test_weights_that_are_not_finite_floats_are_refused(kind, tmp_path, small_weights, capsys):
    from lightsaft_infer.weights import load_weights

    config, tensors = load_weights(small_weights)
    name = sorted(tensors)[0]
    if kind == "int64 tensors":
        tensors = {k: v.astype(np.int64) for k, v in tensors.items()}
    else:
        tensors[name] = tensors[name].copy()
        tensors[name].flat[0] = np.nan
    from safetensors.numpy import save_file

    path = tmp_path / "bad.safetensors"
    save_file(tensors, str(path), metadata={"format": "lightsaft-infer", "format_version": "1", "config": config.to_json()})
    song = tmp_path / "s.wav"
    sf.write(song, np.zeros((4410, 2), np.float32), 44100)
    assert cli.main(["separate", str(song), "-o", str(tmp_path / "out"), "-w", str(path), "--backend", "torch"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(path) in err and ("int64" in err or "NaN" in err), err
    assert not (tmp_path / "out").exists()


def test_a_model_that_gives_non_finite_stems_is_an_error(tmp_path, small_weights, capsys):
    from lightsaft_infer.weights import load_weights, save_weights

    config, tensors = load_weights(small_weights)
    last = [k for k in tensors if k.startswith("last_conv") and k.endswith("weight")][0]
    tensors[last] = tensors[last] * np.float32(1e38)  # finite weights, infinite output
    path = tmp_path / "overflow.safetensors"
    save_weights(path, config, tensors)
    song = tmp_path / "s.wav"
    sf.write(song, (0.5 * np.random.default_rng(0).standard_normal((44100, 2))).astype(np.float32), 44100)
    assert cli.main(["separate", str(song), "-o", str(tmp_path / "out"), "-w", str(path), "--backend", "torch", "-q"]) == 1
    err = [l for l in capsys.readouterr().err.splitlines() if "error" in l]
    assert len(err) == 1 and str(path) in err[0] and "NaN or infinite" in err[0], err
    assert not (tmp_path / "out").exists()


def test_an_onnx_graph_that_does_not_match_its_configuration(tmp_path, small_weights, capsys):
    import onnx

    model = onnx.load(str(small_weights.with_suffix(".onnx")))
    other = json.loads({p.key: p.value for p in model.metadata_props}["config"])
    other["n_fft"], other["num_frame"] = 4096, 128  # the graph is still n_fft 2048
    for prop in model.metadata_props:
        if prop.key == "config":
            prop.value = json.dumps(other)
    path = tmp_path / "mismatch.onnx"
    onnx.save(model, str(path))
    song = tmp_path / "s.wav"
    sf.write(song, np.zeros((4410, 2), np.float32), 44100)
    assert cli.main(["separate", str(song), "-o", str(tmp_path / "out"), "-w", str(path), "--backend", "onnx", "-q"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(path) in err and "configuration says" in err, err
    assert not (tmp_path / "out").exists()


def test_runtime_errors_keep_their_cause():
    signature = "onnxruntime::Status onnxruntime::InferenceSession::Initialize() " * 10
    reason = runtime_reason(RuntimeError(f"[ONNXRuntimeError] : 1 : FAIL : {signature}\n the real cause: Conv weight rank 3"))
    assert "\n" not in reason and reason.endswith("the real cause: Conv weight rank 3") and len(reason) <= 600


def test_convert_with_onnx_leaves_nothing_when_the_tensors_do_not_fit(tmp_path, capsys):
    path = _ckpt(tmp_path / "tiny.ckpt", _tensor("0", 16, 0, (16,), (1,)), {"0": FLOATS16})
    out = tmp_path / "w" / "tiny.safetensors"
    assert cli.main(["convert", str(path), "-o", str(out), "--onnx"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "do not match the configuration" in err, err
    assert not (tmp_path / "w").exists()
