"""Quantisation-aware fine-tuning of the int8 fast path, with the exact model as its teacher.

    python -m training.qat ROOT RUN_DIR --weights weights/default.safetensors --steps 300 [--minutes 60] \\
        [--int8 weights/default.int8.xml]
    # -> RUN_DIR/last.pt (resumable), RUN_DIR/best.pt (best held-out), RUN_DIR/log.jsonl, and with --int8 the
    #    best student as the IR openvino-int8 runs

The student is the exported graph itself: :class:`SeparationGraph` (the
convolutions' BatchNorm folded, the LaSAFT/LaSIFT BatchNorms kept in inference
mode while training -- see :func:`train_mode`; all four sources from one stem,
TFC blocks as sums of per-part convolutions -- exactly what ``export_onnx``
writes), wrapped by NNCF's torch backend with the quantisers NNCF's MIXED preset places in it (symmetric int8
weights per output channel; asymmetric activations per tensor at the inputs of
every convolution, matrix product, Add and Multiply; ``first_conv`` and
``last_conv`` in float), their ranges calibrated on training windows. Training
moves the weights *and* the quantisers' ranges; rounding passes gradients
straight through. The IR is converted from this very network, so what was
trained is what runs: no second quantisation that could place its quantisers
elsewhere (a first attempt trained a simulation that quantised only layer inputs
and lost its gain in NNCF's IR, which also quantises the Add inputs; see
docs/benchmark.md).

The loss pulls the student's four outputs towards the *teacher's* (the unchanged
fp32 graph, the exact path) on training mixtures, relative to the mixture's
energy: the goal is to sound like the exact path, not to become a new model.
Calibration and training use training songs only; every ``--valid-every`` steps
the student is scored against the teacher on full windows of ``ROOT/valid``
songs, and ``best.pt`` keeps the best one, which ``--int8`` converts. The shipped
fp32 weights stay the exact path; the student exists only inside the int8 IR,
which records the teacher's digest (``weights.weights_digest``), so a test can tell which fp32
weights its fast path was made from.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import time

import numpy as np
import torch

from lightsaft_infer.network import ConditionedUNet, SeparationGraph
from lightsaft_infer.weights import load_weights, weights_digest

#: Kept in floating point, as in training.quantize.FLOAT_LAYERS (NNCF torch node names).
FLOAT_PATTERNS = (".*first_conv.*", ".*last_conv.*")


def student_graph(config, tensors) -> SeparationGraph:
    """The exported graph with trainable weights: ``(B, 4, T, F) -> (B, 4, 4, T, F)``."""
    graph = SeparationGraph(ConditionedUNet.from_tensors(config, tensors))
    for tfc in graph.tfcs:
        tfc.split = True  # the per-part form the export traces (the eager form writes in place)
    for p in graph.parameters():
        p.requires_grad_(True)
    return graph


def quantized_student(config, tensors, windows):
    """:func:`student_graph` with NNCF's quantisers, ranges calibrated on ``windows`` (each ``(1, 4, T, F)``)."""
    import nncf

    return nncf.quantize(
        student_graph(config, tensors), nncf.Dataset([torch.from_numpy(w) for w in windows]), subset_size=len(windows),
        preset=nncf.QuantizationPreset.MIXED, ignored_scope=nncf.IgnoredScope(patterns=list(FLOAT_PATTERNS)),
        # bias correction would only shift biases QAT trains anyway (and NNCF's torch backend cannot run it on
        # the per-part convolutions without biases)
        advanced_parameters=nncf.AdvancedQuantizationParameters(disable_bias_correction=True),
    )  # fmt: skip


def restored_student(config, tensors, nncf_config: str, state: dict):
    """The quantised student of a checkpoint: the quantisers from NNCF's config (JSON), then weights and ranges."""
    from nncf.torch import load_from_config

    student = load_from_config(student_graph(config, tensors), json.loads(nncf_config))
    student.load_state_dict(state)
    return student


def train_mode(student) -> None:
    """Put the student in training mode with its BatchNorm layers in inference mode: the LaSAFT/LaSIFT
    BatchNorms are not folded in :class:`SeparationGraph`, and the statistics of a 64-frame excerpt would make
    the trained network another one than the IR runs (and overwrite the exact model's running statistics)."""
    student.train()
    for module in student.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.eval()


def param_groups(student, lr: float, range_lr: float) -> list:
    """Adam groups: weights and biases at ``lr``; each quantiser range tensor at ``range_lr`` times its mean
    magnitude when the run (re)starts. Adam's steps are absolute and the ranges span orders of magnitude (one
    rate of 1e-3 for all took a student from 14.7 to 6.3 dB of the teacher in 25 steps): they move relatively."""
    weights, groups = [], []
    for name, p in student.named_parameters():
        if not p.requires_grad:
            continue
        if name.rsplit(".", 1)[-1] in ("scale", "input_low", "input_range"):  # NNCF's quantiser parameters
            groups.append({"params": [p], "lr": range_lr * max(float(p.detach().abs().mean()), 1e-8)})
        else:
            weights.append(p)
    return [{"params": weights, "lr": lr}] + groups


def held_out_db(student, teacher, windows) -> float:
    """Distortion of the student's four stems against the teacher's on held-out ``windows``, in dB (higher =
    closer to the exact path; ``training.sensitivity.distortion_db``)."""
    from training.sensitivity import distortion_db

    was_training = student.training
    student.eval()
    with torch.no_grad():
        est = np.stack([student(torch.from_numpy(w)).numpy() for w in windows])
        ref = np.stack([teacher(torch.from_numpy(w)).numpy() for w in windows])
    if was_training:
        train_mode(student)
    return distortion_db(est, ref)


def distillation_loss(student_out, teacher_out, mix):
    """Squared distance to the teacher relative to the mixture's energy: quantisation noise follows the input's
    level, and a source that is silent in the excerpt would make a loss relative to the teacher explode."""
    return torch.sum((student_out - teacher_out) ** 2) / torch.sum(mix**2).clamp_min(1e-8)


def to_ir(student, config, out_xml, digest: str, extra: dict | None = None) -> None:
    """Convert the quantised student to the OpenVINO IR ``openvino-int8`` runs (input ``(1, 4, num_frame, F)``),
    written atomically with its configuration and the teacher's ``digest``."""
    import openvino as ov

    from training.quantize import save_ir

    student.eval()
    shape = [1, 4, config.num_frame, config.n_bins]
    with torch.no_grad():
        model = ov.convert_model(student, example_input=torch.zeros(shape), input=[shape])
    save_ir(model, out_xml, config, digest, extra)


def _save(path: str, payload: dict) -> None:
    """``torch.save`` atomically: a run killed while saving keeps its previous checkpoint."""
    torch.save(payload, path + ".tmp")
    os.replace(path + ".tmp", path)


def calibration_mixtures(root: str, n: int, split: str = "train") -> list:
    """``n`` mixtures spread evenly over ``ROOT/split`` (sorted names group a corpus's recipes)."""
    mixtures = sorted(glob.glob(os.path.join(root, split, "*", "mixture.wav")))
    if not mixtures:
        raise SystemExit(f"{root}/{split}: no <song>/mixture.wav")
    return [mixtures[i] for i in np.linspace(0, len(mixtures) - 1, min(n, len(mixtures))).round().astype(int)]


def qat(root: str, run_dir: str, weights: str, steps: int = 300, minutes: float = 1e9, frames: int = 64,
        batch_size: int = 1, lr: float = 1e-5, calibration_songs: int = 16, per_song: int = 2, seed: int = 0,
        threads=None, log_every: int = 10, progress: bool = True, range_lr: float = 1e-3, valid_every: int = 50,
        valid_songs: int = 4) -> dict:
    """Fine-tune (or resume) in ``run_dir``; returns a summary with the quantised ``student`` and, as ``best``,
    the state with the highest held-out ``valid_db`` (full windows of ``valid_songs`` songs of ``ROOT/valid``,
    checked every ``valid_every`` steps; ``RUN_DIR/best.pt``). See the module docstring."""
    from training.quantize import calibration_windows
    from training.train import MultitrackSet, batch, optimiser_step

    if threads:
        torch.set_num_threads(threads)
    config, tensors = load_weights(weights)
    digest = weights_digest(tensors)
    teacher = SeparationGraph(ConditionedUNet.from_tensors(config, tensors)).eval()
    os.makedirs(run_dir, exist_ok=True)
    ckpt = os.path.join(run_dir, "last.pt")
    rng = np.random.default_rng(seed)
    step, elapsed = 0, 0.0
    state = torch.load(ckpt, weights_only=True) if os.path.exists(ckpt) else None
    if state is not None:
        if state["teacher_digest"] != digest:
            raise SystemExit(f"{ckpt}: a QAT run of other weights than {weights}; use another RUN_DIR")
        nncf_config = state["nncf_config"]
        student = restored_student(config, tensors, nncf_config, state["model"])
        step, elapsed = state["step"], state["elapsed"]
        rng.bit_generator.state = json.loads(state["rng"])
    else:
        windows = calibration_windows(calibration_mixtures(root, calibration_songs), config, per_song, seed)
        student = quantized_student(config, tensors, windows)
        from nncf.torch import get_config

        nncf_config = json.dumps(get_config(student))
    train_mode(student)
    opt = torch.optim.Adam(param_groups(student, lr, range_lr))
    if state is not None:
        rates = [group["lr"] for group in opt.param_groups]  # the command line's rates win on resume
        if len(state["optimizer"]["param_groups"]) != len(rates):
            raise SystemExit(f"{ckpt}: made by an older training.qat (other optimiser groups); use another RUN_DIR")
        opt.load_state_dict(state["optimizer"])
        for group, rate in zip(opt.param_groups, rates):
            group["lr"] = rate
    held_out = calibration_windows(calibration_mixtures(root, valid_songs, "valid"), config, 1, seed + 1)
    best_path = os.path.join(run_dir, "best.pt")
    best_db = torch.load(best_path, weights_only=True)["valid_db"] if os.path.exists(best_path) else -math.inf
    if step == 0 and best_db == -math.inf:  # the calibrated start is the first candidate
        best_db = held_out_db(student, teacher, held_out)
        _save(best_path, {"model": student.state_dict(), "nncf_config": nncf_config, "step": 0, "valid_db": best_db})
    data = MultitrackSet(root, "train")
    length = config.hop_length * (frames - 1)
    start = time.time() - elapsed
    running, bar = None, None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=steps, initial=step, unit="step")
    with open(os.path.join(run_dir, "log.jsonl"), "a") as log:
        while step < steps and time.time() - start < minutes * 60:
            mix = batch(data, rng, batch_size, length, 0.5, "cpu")[0]
            with torch.no_grad():
                teacher_out = teacher(mix)
            running = optimiser_step(opt, distillation_loss(student(mix), teacher_out, mix), running, bar, 0.95)
            step += 1
            if step % log_every == 0 or step == steps or step % valid_every == 0:
                # distance to the teacher relative to the mixture, in dB (higher = closer to the exact path)
                entry = {"step": step, "loss": running, "teacher_db": -10 * math.log10(max(running, 1e-12)),
                         "seconds": round(time.time() - start, 1)}  # fmt: skip
                if step % valid_every == 0 or step == steps:
                    entry["valid_db"] = held_out_db(student, teacher, held_out)
                    if entry["valid_db"] > best_db:
                        best_db = entry["valid_db"]
                        _save(best_path, {"model": student.state_dict(), "nncf_config": nncf_config, "step": step,
                                          "valid_db": best_db})  # fmt: skip
                log.write(json.dumps(entry) + "\n")
                log.flush()
                _save(ckpt, {"model": student.state_dict(), "nncf_config": nncf_config, "optimizer": opt.state_dict(),
                             "step": step, "elapsed": time.time() - start, "rng": json.dumps(rng.bit_generator.state),
                             "teacher_digest": digest})  # fmt: skip
    if bar is not None:
        bar.close()
    best = torch.load(best_path, weights_only=True)
    return {"step": step, "loss": running, "student": student, "config": config, "teacher_digest": digest,
            "seconds": time.time() - start, "best": {"step": best["step"], "valid_db": best["valid_db"],
                                                     "path": best_path}}  # fmt: skip


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.qat", description=__doc__.split("\n\n")[0])
    p.add_argument("root", help="MUSDB-layout folder with train/ (training songs only)")
    p.add_argument("run_dir")
    p.add_argument("--weights", required=True, help="the fp32 teacher (NAME.safetensors)")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--minutes", type=float, default=1e9, help="stop (resumably) after this much wall time")
    p.add_argument("--frames", type=int, default=64)
    p.add_argument("--batch", type=int, default=1, help="windows per step (each runs all four sources)")
    p.add_argument("--lr", type=float, default=1e-5, help="Adam's rate for the weights and biases")
    p.add_argument("--range-lr", type=float, default=1e-3, help="Adam's rate for each quantiser range, "
                   "relative to the range's magnitude")  # fmt: skip
    p.add_argument("--valid-every", type=int, default=50, help="steps between held-out checks (ROOT/valid)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--calibration-songs", type=int, default=16)
    p.add_argument("--int8", default=None, help="when the run is complete, write the student's IR here "
                                                "(e.g. weights/default.int8.xml)")  # fmt: skip
    a = p.parse_args(argv)
    summary = qat(a.root, a.run_dir, a.weights, a.steps, a.minutes, a.frames, a.batch, a.lr, a.calibration_songs,
                  threads=a.threads, range_lr=a.range_lr, valid_every=a.valid_every)  # fmt: skip
    print(json.dumps({k: v for k, v in summary.items() if k not in ("student", "config")}))
    if a.int8 and summary["step"] >= a.steps:
        best, config = summary["best"], summary["config"]
        state = torch.load(best["path"], weights_only=True)  # restored only to convert it
        student = restored_student(config, load_weights(a.weights)[1], state["nncf_config"], state["model"])
        to_ir(student, config, a.int8, summary["teacher_digest"],
              {"qat_steps": str(best["step"]), "qat_valid_db": f"{best['valid_db']:.2f}"})  # fmt: skip
        print(f"{a.int8}: int8 of the QAT student at step {best['step']} (best held-out, {best['valid_db']:.2f} dB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
