"""The networks published after the challenge — LightSAFT-Net+, LaSAFT-Net-v2 light and large, the medium
LightSAFT — exact against the authors' recorded outputs on every exact backend, whole songs in the v2 code
base's chunking, and their Hydra configuration read as data (hostile files refused in one line)."""

import os
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf

from lightsaft_infer import cli
from lightsaft_infer.backends import TorchBackend, module_available, open_backend
from lightsaft_infer.chunking import plan_chunks
from lightsaft_infer.cpu import describe, has_bf16
from lightsaft_infer.errors import WeightFileError
from lightsaft_infer.families import build_network
from lightsaft_infer.hydra_config import read_hydra_config
from lightsaft_infer.separator import Separator
from lightsaft_infer.weights import load_weights

from .conftest import FIXTURES_V2, REPO, SPEC_REL, WAVE_REL, assert_exact

EXACT = ["torch", "onnx", pytest.param("openvino", marks=pytest.mark.skipif(
    not module_available("openvino"), reason="OpenVINO is not installed"))]


@pytest.fixture(scope="module")
def vectors_v2(upstream_v2):
    return {name: dict(np.load(upstream_v2 / f"{name}_vectors.npz")) for name in FIXTURES_V2}


def test_configurations_are_the_published_ones(converted_v2):
    cfg = {name: load_weights(path)[0] for name, path in converted_v2.items()}
    assert cfg["v1_light"].family == cfg["v2_light"].family == cfg["v2_large"].family == "lasaft-v2"
    assert not cfg["v1_light"].query_listen and not cfg["v1_light"].key_listen
    assert cfg["v2_light"].query_listen and cfg["v2_light"].key_listen and cfg["v2_light"].activation == "leaky_relu"
    assert (cfg["v2_light"].n_blocks, cfg["v2_light"].internal_channels, cfg["v2_light"].num_tdfs) == (7, 20, 12)
    assert (cfg["v2_large"].n_fft, cfg["v2_large"].internal_channels, cfg["v2_large"].dk) == (4096, 24, 32)
    medium = cfg["lightsaft_medium"]
    assert (medium.family, medium.n_blocks, medium.control_n_layer, medium.num_frame) == ("lasaft-v1", 11, 6, 256)
    # parameter counts of the README's checkpoint table (spec2spec, without the STFT window and BN statistics)
    counts = {name: sum(t.size for k, t in load_weights(p)[1].items() if not k.endswith(("running_mean", "running_var")))
              for name, p in converted_v2.items()}
    assert counts == {"v1_light": 2_040_372, "v2_light": 1_910_270, "v2_large": 7_900_700, "lightsaft_medium": 9_138_868}


# OpenVINO fp32 on v2 large (~45 s of compiling its n_fft 4096 graph) runs with -m slow, as CI does; its
# torch and ONNX parity, and OpenVINO on the other three networks, stay in the default run.
SPECTROGRAM_CASES = [
    (name, backend) for backend in ["reference", "torch", "onnx"] for name in FIXTURES_V2
] + [pytest.param(name, "openvino", marks=[pytest.mark.skipif(not module_available("openvino"), reason="OpenVINO is not installed")]
                  + ([pytest.mark.slow] if name == "v2_large" else [])) for name in FIXTURES_V2]  # fmt: skip


@pytest.mark.parametrize("name, backend", SPECTROGRAM_CASES)
def test_network_matches_the_authors_spectrograms(name, backend, converted_v2, vectors_v2):
    """Per condition: the authors' network written from the maths (``reference``), and the frozen
    all-sources graph on each exact backend, equal the authors' own output to 1e-5 of its peak."""
    v = vectors_v2[name]
    x = v["spec_in"]
    if backend == "reference":
        import torch

        net = build_network(*load_weights(converted_v2[name]))
        with torch.inference_mode():
            outs = np.stack([net(torch.from_numpy(x), torch.tensor([c])).numpy() for c in range(4)], 1)
    elif backend == "torch":
        outs = open_backend(converted_v2[name], backend)(x)
    else:  # compiled for the fixture's window only (the model's own is compiled by every other test)
        from lightsaft_infer.backends import OnnxBackend, OpenVinoFp32Backend

        kind = OnnxBackend if backend == "onnx" else OpenVinoFp32Backend
        outs = kind(converted_v2[name].with_suffix(".onnx"), compile_window=False)(x)
    assert outs.shape == (1, 4) + x.shape[1:]
    for c in range(4):
        want = v[f"spec_out_{c}"]
        assert_exact(outs[:, c], want, SPEC_REL, f"{name} {backend} condition {c}")
    # the conditions really differ (a graph that ignored the condition could not pass the loop above)
    assert np.abs(v["spec_out_0"] - v["spec_out_3"]).max() > 1e-2


@pytest.mark.parametrize("backend", EXACT)
def test_lightsaft_net_plus_whole_song_in_the_v2_chunking(backend, converted_v2, vectors_v2):
    """--mode authors on a v2-code network is that code base's chunking (trim 5120, halves summed)."""
    v = vectors_v2["v1_light"]
    sep = Separator.from_file(converted_v2["v1_light"], backend=backend, mode="authors")
    stems = sep.separate(v["wave_in"], 44100)
    for source, stem in stems.items():
        assert_exact(stem, v[f"wave_out_{source}"], WAVE_REL, f"{backend} {source}")
    default = Separator.from_file(converted_v2["v1_light"], backend=backend).separate(v["wave_in"], 44100)
    assert np.abs(default["vocals"] - v["wave_out_vocals"]).max() > 1e-4  # our own chunking is a different one


def test_authors_reference_path_reproduces_the_v2_song(converted_v2, vectors_v2):
    from lightsaft_infer.reference import separate_reference

    v = vectors_v2["v1_light"]
    stems = separate_reference(build_network(*load_weights(converted_v2["v1_light"])), v["wave_in"], batch_size=2)
    for source, stem in stems.items():
        assert_exact(stem, v[f"wave_out_{source}"], WAVE_REL, f"reference {source}")


def test_v2_chunking_follows_the_authors_rules_including_their_irregular_window():
    W, hop = 1024 * 127, 1024
    K, U = 5120, W - 2 * 5120
    S = U // 2
    plan = plan_chunks(198450, W, hop, "authors-v2")
    assert (plan.trim, plan.kept, plan.stride, plan.n_windows) == (K, U, S, 3)
    first, middle, last = (plan.window_weights(k) for k in range(3))
    assert first[K] == 1 and first[W - K - 1] == 0.5 and middle[K] == 0.5 and middle[W - K - 1] == 0.5
    assert last[K] == 0.5 and last[W - K - 1] == 1 and (first[:K] == 0).all() and (last[W - K :] == 0).all()
    assert not any(plan.input_zeroed(k) for k in range(3))
    # 182,000 samples: window 1 ends inside the last K samples (s + U <= L <= s + U + K): no halves at all,
    # and its last K input samples are zeros, as the authors' code computes it
    odd = plan_chunks(182_000, W, hop, "authors-v2")
    s = S
    assert s + U <= 182_000 <= s + U + K and odd.n_windows == 3
    w = odd.window_weights(1)
    assert (w[K : W - K] == 1).all() and odd.input_zeroed(1) == K and odd.input_zeroed(0) == 0
    assert not odd.normalised
    # on an identity network the v2 chunking returns the track weighted by what the authors' weights sum to
    from .conftest import IdentityBackend
    from lightsaft_infer.config_v2 import V2Config

    cfg = V2Config(n_fft=2048, hop_length=1024, num_frame=128, n_blocks=9, internal_channels=16, n_internal_layers=4,
                   kernel_size_t=3, kernel_size_f=3, bn_factor=16, min_bn_units=16, tfc_tdf_bias=False, num_tdfs=16,
                   dk=64, embedding_dim=64, query_listen=False, key_listen=False)
    x = np.random.default_rng(0).standard_normal((182_000, 2)).astype(np.float32) * 0.1
    y = Separator(IdentityBackend(cfg), mode="authors").separate(x, 44100)["vocals"]
    inside = slice(S + U - S, S + U)  # window 1's last half, where window 2's first half (0.5) overlaps its 1
    assert np.allclose(y[inside], 1.5 * x[inside], atol=1e-4)
    assert np.allclose(y[1000:S], x[1000:S], atol=1e-4)


def _song(path, seconds=1.0):
    x = (0.1 * np.random.default_rng(3).standard_normal((int(seconds * 44100), 2))).astype(np.float32)
    sf.write(path, x, 44100)
    return x


@pytest.mark.parametrize("name", FIXTURES_V2)
def test_separate_runs_every_published_network(name, converted_v2, tmp_path, capsys):
    song = tmp_path / "song.wav"
    x = _song(song)
    assert cli.main(["separate", str(song), "-o", str(tmp_path / "out"), "-w", str(converted_v2[name].with_suffix(".onnx")), "-q"]) == 0
    for source in ("vocals", "drums", "bass", "other"):
        y, rate = sf.read(tmp_path / "out" / "song" / f"{source}.wav", dtype="float32")
        assert rate == 44100 and y.shape == x.shape and np.isfinite(y).all() and np.abs(y).max() > 0
    assert cli.main(["info", str(converted_v2[name])]) == 0
    assert '"n_blocks"' in capsys.readouterr().out


def test_predict_runs_a_v2_network(converted_v2, tmp_path):
    song = tmp_path / "test" / "song0"
    song.mkdir(parents=True)
    _song(song / "mixture.wav", 2.0)
    env = {**os.environ, "TEST_DATASET_PATH": str(tmp_path / "test"), "RESULTS_DATASET_PATH": str(tmp_path / "results"),
           "LIGHTSAFT_WEIGHTS": str(converted_v2["v2_light"].with_suffix(".onnx")), "LIGHTSAFT_FAST": "none"}
    proc = subprocess.run([sys.executable, str(REPO / "predict.py")], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "LaSAFT-Net-v2" in proc.stdout and "song0:" in proc.stdout
    for source in ("vocals", "drums", "bass", "other"):
        y, _ = sf.read(tmp_path / "results" / "song0" / f"{source}.wav")
        assert y.shape == (88200, 2) and np.abs(y).max() > 0


# -- the configuration: found, required, and read as data ---------------------------------------------


def test_convert_says_what_is_missing_and_takes_config(upstream_v2, tmp_path, capsys):
    import shutil

    ckpt = tmp_path / "epoch=669.ckpt"
    shutil.copy(upstream_v2 / "v2_light.ckpt", ckpt)  # no config.yaml beside it
    code = cli.main(["convert", str(ckpt), "-o", str(tmp_path / "x.safetensors")])
    err = capsys.readouterr().err
    assert code != 0 and "no config.yaml is beside it" in err and "--config" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.safetensors").exists()
    code = cli.main(["convert", str(ckpt), "-o", str(tmp_path / "x.safetensors"), "--config",
                     str(upstream_v2 / "v2_light.config.yaml")])
    assert code == 0 and load_weights(tmp_path / "x.safetensors")[0].name == "v2_light"
    shutil.copy(upstream_v2 / "v2_large.config.yaml", tmp_path / "config.yaml")  # another network's configuration
    code = cli.main(["convert", str(ckpt), "-o", str(tmp_path / "y.safetensors")])
    err = capsys.readouterr().err
    assert code != 0 and "tensors do not match the configuration" in err and not (tmp_path / "y.safetensors").exists()


def _crafted(folder, tmp_path, old, new):
    """The authors' v2_light config.yaml (from the fixtures in ``folder``) with ``old`` replaced by ``new``."""
    good = (folder / "v2_light.config.yaml").read_text()
    text = good.replace(old, new, 1)
    assert text != good
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


HOSTILE = [
    ("env resolver in the model", "n_blocks: 7", "n_blocks: ${oc.env:HOME}", "does not evaluate"),
    ("hydra resolver", "internal_channels: 20", "internal_channels: ${hydra:runtime.cwd}", "does not evaluate"),
    ("reference cycle", "norm: bn", "norm: ${model.spec2spec.norm}", "deeper than"),
    ("dangling reference", "n_fft: 2048\n  num_frame", "n_fft: ${model.nothing}\n  num_frame", "has no 'model.nothing'"),
    ("an import target", "lasaft.models.conditioned.spec2spec.block_functions.MkTFCLightSAFTGPoCM", "os.system", "supported"),
    ("a LaSAFT block function", "MkTFCLightSAFTGPoCM", "MkTFCLaSAFTGPoCM", "supported"),
    ("huge block count", "n_blocks: 7", "n_blocks: 1000000001", "outside what this architecture can mean"),
    ("huge channel count", "internal_channels: 20", "internal_channels: 100000000", "outside what this architecture can mean"),
    ("a list for a size", "dk: 32", "dk: [32]", "positive integer"),
    ("a string activation", "activation: leaky_relu\n      condition_dim", "activation: gelu\n      condition_dim", "must be one of"),
    ("a python tag", "dk: 32", "dk: !!python/object/apply:os.system ['echo pwned']", "not valid YAML"),
    ("unsupported norm", "norm: bn", "norm: ln", "only 'bn'"),
    ("mismatched gr", "gr: ${model.spec2spec.internal_channels}", "gr: 7", "differs from"),
    ("no model", "model:", "modell:", "no 'model' section"),
    # the audit: a 9-level alias bomb under the name (76 s and 3.1 GB before), and an alias inside its own anchor
    ("alias bomb in the name", "model:\n", "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [" + ", ".join([f"*{chr(97 + i)}"] * 9) + "]\n" for i in range(9)
    ) + "model:\n", "YAML alias"),
    ("alias bomb as the name", "name: v2_light", "name: *j", "YAML alias"),
    ("self-referencing alias", "n_fft: 2048\n  num_frame", "n_fft: &r2 [*r2]\n  num_frame", "YAML alias"),
]


@pytest.mark.parametrize("label, old, new, message", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_configurations_are_refused_in_one_line(label, old, new, message, tmp_path, upstream_v2):
    path = _crafted(upstream_v2, tmp_path, old, new)
    t = time.perf_counter()
    with pytest.raises(WeightFileError) as err:
        read_hydra_config(path)
    assert time.perf_counter() - t < 5
    text = str(err.value)
    assert text.startswith(str(path)) and message in text and "\n" not in text, text
    assert not (tmp_path / "pwned").exists()


def test_reading_a_v2_config_without_pyyaml_is_one_line(tmp_path, upstream_v2, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "yaml", None)  # as on a machine without PyYAML
    code = cli.main(["convert", str(upstream_v2 / "v2_light.ckpt"), "-o", str(tmp_path / "x.safetensors"),
                     "--config", str(upstream_v2 / "v2_light.config.yaml")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "pip install pyyaml" in err and "Traceback" not in err, err


def test_oversized_nested_and_aliased_yaml_is_refused_quickly(tmp_path):
    cases = {
        "big.yaml": "model:\n" + "  x: 1\n" * 30_000,  # over 64 kB
        "deep.yaml": "model: " + "[" * 50_000 + "]" * 50_000,
        "laughs.yaml": "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
            f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n" for i in range(20)
        ) + "model: {n_fft: 2048}\n",
        "binary.yaml": b"\xff\xfe model: 1",
        "list.yaml": "- 1\n- 2\n",
    }
    for name, text in cases.items():
        path = tmp_path / name
        (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
        t = time.perf_counter()
        with pytest.raises(WeightFileError) as err:
            read_hydra_config(path)
        assert time.perf_counter() - t < 5, name
        assert str(err.value).startswith(str(path)) and "\n" not in str(err.value), (name, str(err.value))


def test_unknown_families_are_named(tmp_path, capsys):
    """A weight file of a family this engine does not know, and a checkpoint of neither code base."""
    from lightsaft_infer import configs

    with pytest.raises(WeightFileError, match="model family 'lasaft-v9' is not one of"):
        configs.from_dict({"family": "lasaft-v9"}, "x.safetensors")
    with pytest.raises(WeightFileError, match="model family"):
        configs.from_dict({"family": ["lasaft-v2"]}, "x.safetensors")
    torch = pytest.importorskip("torch")
    ckpt = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"spec2spec.conv.weight": torch.zeros(3), "spec2spec.fc.bias": torch.zeros(2)}}, ckpt)
    code = cli.main(["convert", str(ckpt), "-o", str(tmp_path / "x.safetensors")])
    err = capsys.readouterr().err.strip()
    assert code != 0 and "conv.weight" in err and "supported:" in err and "LaSAFT-Net-v2" in err and "\n" not in err


@pytest.mark.parametrize("query_listen, key_listen", [(False, False), (True, False), (False, True), (True, True)])
def test_every_listen_mode_freezes_to_the_same_network(query_listen, key_listen, tmp_path):
    """The published networks use both listen modes or neither; the query-only and key-only modes the
    authors' configs also name must freeze and export as exactly (random weights, tiny network)."""
    torch = pytest.importorskip("torch")
    from lightsaft_infer.backends import OnnxBackend
    from lightsaft_infer.families import frozen_graph
    from lightsaft_infer.network_v2 import ConditionedUNetV2

    cfg, tensors, _ = _tiny_v2(tmp_path, query_listen, key_listen)
    rng = np.random.default_rng(8)
    net = ConditionedUNetV2.from_tensors(cfg, tensors)
    x = torch.from_numpy(rng.standard_normal((1, 4, 16, 65)).astype(np.float32))
    with torch.inference_mode():
        want = torch.stack([net(x, torch.tensor([c])) for c in range(4)], 1).numpy()
        graph = frozen_graph(net)(x).numpy()
    exported = OnnxBackend(tmp_path / "tiny.onnx")(x.numpy())
    peak = np.abs(want).max()
    assert np.abs(graph - want).max() < 1e-5 * peak and np.abs(exported - want).max() < 1e-5 * peak
    assert np.abs(want[:, 0] - want[:, 1]).max() > 1e-3 * peak  # the condition matters


# -- the fast paths ----------------------------------------------------------------------------------------


def _tiny_v2(tmp_path, query_listen=True, key_listen=True, seed=7):
    """A tiny LaSAFT-Net-v2 with random weights: ``(config, tensors, NAME.safetensors)``, exported to ONNX beside it."""
    torch = pytest.importorskip("torch")
    from lightsaft_infer.config_v2 import V2Config
    from lightsaft_infer.export import export_onnx
    from lightsaft_infer.network_v2 import ConditionedUNetV2
    from lightsaft_infer.weights import save_weights

    cfg = V2Config(n_fft=128, hop_length=32, num_frame=16, n_blocks=5, internal_channels=4, n_internal_layers=2,
                   kernel_size_t=3, kernel_size_f=3, bn_factor=4, min_bn_units=2, tfc_tdf_bias=False, num_tdfs=3,
                   dk=5, embedding_dim=6, query_listen=query_listen, key_listen=key_listen, activation="leaky_relu")
    rng = np.random.default_rng(seed)
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in ConditionedUNetV2(cfg).state_dict().items() if "num_batches" not in k}
    tensors = {k: (rng.uniform(0.5, 1.5, s) if "running_var" in k else rng.standard_normal(s) * 0.5).astype(np.float32)
               for k, s in shapes.items()}
    save_weights(tmp_path / "tiny.safetensors", cfg, tensors)
    export_onnx(tmp_path / "tiny.safetensors", tmp_path / "tiny.onnx")
    return cfg, tensors, tmp_path / "tiny.safetensors"


def _bf16_relative_error(weights, frames: int) -> float:
    # built directly: open_backend refuses torch-bf16 on a CPU without bfloat16 (the tiny network is fine there)
    exact, fast = open_backend(weights, "torch"), TorchBackend.from_file(weights, precision="bf16")
    assert fast.name == "torch-bf16"
    c = exact.config
    spec = (np.random.default_rng(5).standard_normal((1, 4, frames, c.n_bins)) * 3).astype(np.float32)
    y, z = fast(spec), exact(spec)
    return float(np.linalg.norm(y - z) / np.linalg.norm(z))


def test_torch_bf16_runs_the_v2_graph(tmp_path):
    """bfloat16 autocast through every v2 block kind (TFC-TDF, GPoCM, listening attention): close to fp32, not
    fp32. A tiny network, so that a CPU without bfloat16 (torch's scalar GEMM) finishes in seconds too."""
    _, _, weights = _tiny_v2(tmp_path)
    assert 1e-5 < _bf16_relative_error(weights, 16) < 5e-2


@pytest.mark.parametrize("name", FIXTURES_V2)
@pytest.mark.skipif(not has_bf16(), reason=f"this CPU has no bfloat16 support: {describe()}")
def test_torch_bf16_is_close_to_exact_on_every_later_network(name, converted_v2):
    # without bfloat16 hardware one short window of v2 large takes minutes (scalar GEMM): only where it is fast
    pytest.importorskip("torch")
    frames = 2 * load_weights(converted_v2[name])[0].frame_multiple
    assert 1e-5 < _bf16_relative_error(converted_v2[name], frames) < 5e-2


@pytest.mark.slow  # ~40 s: NNCF calibration of LightSAFT-Net+, then a song on the int8 path
@pytest.mark.skipif(not module_available("openvino"), reason="OpenVINO is not installed")
def test_int8_model_of_a_v2_network_keeps_its_first_block_in_float(converted_v2, tmp_path, capsys):
    pytest.importorskip("nncf")
    import shutil

    import openvino as ov

    from training.quantize import CONFIG_KEY, main
    from training.sensitivity import layer_of

    for suffix in (".onnx", ".safetensors"):
        shutil.copy(converted_v2["v1_light"].with_suffix(suffix), tmp_path / f"plus{suffix}")
    assert main([str(REPO / "data" / "test"), "--weights", str(tmp_path / "plus.onnx"), "--per-song", "2"]) == 0
    model = ov.Core().read_model(str(tmp_path / "plus.int8.xml"))
    assert model.get_rt_info([CONFIG_KEY[0], "float_layers"]).astype(str) == "encoders.0"  # the v2 graph's first block
    quantisers = [op for op in model.get_ordered_ops() if op.get_type_name() == "FakeQuantize"]
    fed = {layer_of(t.get_node().get_friendly_name()) for op in quantisers for t in op.output(0).get_target_inputs()}
    assert len(quantisers) > 100 and "encoders.0" not in fed and "encoders.1" in fed
    fast, exact = open_backend(tmp_path / "plus.onnx", "openvino-int8"), open_backend(tmp_path / "plus.onnx", "onnx")
    assert fast.config == exact.config and fast.config.family == "lasaft-v2"
    song = tmp_path / "song.wav"
    x = _song(song, 3.0)
    a = Separator(exact).separate(x, 44100)
    b = Separator(fast).separate(x, 44100)
    for source in a:  # int8, yet the same separation: every stem closer to exact than silence is
        assert np.isfinite(b[source]).all() and np.linalg.norm(b[source] - a[source]) < 0.9 * np.linalg.norm(a[source])
    assert cli.main(["separate", str(song), "-o", str(tmp_path / "out"), "-w", str(tmp_path / "plus.onnx"),
                     "--backend", "openvino-int8", "-q"]) == 0
    assert sf.info(str(tmp_path / "out" / "song" / "vocals.wav")).frames == len(x)


@pytest.mark.parametrize("postfilter", ["none", "consistency"])
def test_augmented_passes_run_a_v2_network_with_post_filters(postfilter, tmp_path):
    """``--shifts`` on the later family too (a tiny LaSAFT-Net-v2 with listening attention), post-filter or not:
    every stem finite and of the input's shape, and the passes change the estimate without replacing it."""
    _, _, weights = _tiny_v2(tmp_path)
    x = (0.1 * np.random.default_rng(4).standard_normal((8000, 2))).astype(np.float32)
    plain = Separator.from_file(weights.with_suffix(".onnx"), trim=64, postfilter=postfilter).separate(x, 44100)
    sep = Separator.from_file(weights.with_suffix(".onnx"), trim=64, postfilter=postfilter, shifts=3)
    passes = sep.separate(x, 44100)
    for source, y in passes.items():
        assert y.shape == x.shape and np.isfinite(y).all()
        change = np.linalg.norm(y - plain[source]) / np.linalg.norm(plain[source])
        assert 1e-4 < change < 1, (source, change)
