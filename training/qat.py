"""Quantisation-aware fine-tuning of the int8 fast path, with the exact model as its teacher.

    python -m training.qat ROOT RUN_DIR --weights weights/default.safetensors [--steps 400 --minutes 60]
    # -> RUN_DIR/student.safetensors (+ .onnx), RUN_DIR/last.pt (resumable),
    #    and with --int8 OUT.xml the student quantised by training.quantize into the IR openvino-int8 runs

The student starts as a copy of the fp32 network and trains with int8 simulated
the way the export is quantised (``training/quantize.py``, NNCF's MIXED preset):
weights per output channel, symmetric, 255 levels; activations per tensor,
asymmetric, 256 levels, their range an exponential moving average of the batch
min/max; ``first_conv`` and ``last_conv`` in float. Rounding passes gradients
straight through. The loss pulls the student's output towards the *teacher's*
(the unchanged fp32 network's) on training mixtures -- the goal is to sound like
the exact path, not to become a new model -- plus a small pull towards the
references (``--ref-weight``). Calibration and training use training songs only.

The shipped fp32 weights stay the exact path; the student exists only inside the
int8 IR, which records the teacher's digest (``weights.weights_digest``), so a
test can tell which fp32 weights its fast path was made from.
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
from torch import nn
from torch.nn import functional as F

from lightsaft_infer.network import ConditionedUNet
from lightsaft_infer.weights import load_weights, save_weights, weights_digest

#: Kept in floating point, as in training.quantize.FLOAT_LAYERS.
FLOAT_MODULES = ("first_conv", "last_conv")


def _round_ste(x):
    return x + (torch.round(x) - x).detach()  # rounding with a straight-through gradient


def fake_quant_weight(w: torch.Tensor, axis: int) -> torch.Tensor:
    """Symmetric per-channel int8 (levels -127..127) along ``axis`` (the output channels)."""
    dims = [d for d in range(w.dim()) if d != axis]
    scale = w.detach().abs().amax(dim=dims, keepdim=True).clamp_min(1e-12) / 127
    return _round_ste(w / scale).clamp(-127, 127) * scale


class _Activation(nn.Module):
    """Asymmetric per-tensor uint8 fake quantisation with an EMA min/max range."""

    def __init__(self, momentum: float = 0.01):
        super().__init__()
        self.momentum = momentum
        self.register_buffer("low", torch.tensor(0.0))
        self.register_buffer("high", torch.tensor(0.0))
        self.register_buffer("seen", torch.tensor(0))

    def forward(self, x):
        if self.training:
            lo, hi = x.detach().min(), x.detach().max()
            if self.seen == 0:
                self.low.copy_(lo), self.high.copy_(hi)
            else:
                self.low.lerp_(lo, self.momentum), self.high.lerp_(hi, self.momentum)
            self.seen += 1
        low, high = torch.minimum(self.low, torch.zeros(())), torch.maximum(self.high, torch.zeros(()))
        scale = (high - low).clamp_min(1e-12) / 255
        zero = torch.round(-low / scale)
        q = (_round_ste(x / scale) + zero).clamp(0, 255)
        return (q - zero) * scale


class QuantLayer(nn.Module):
    """A Conv2d / ConvTranspose2d / Linear with int8-simulated input and weights."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer
        self.act = _Activation()

    def forward(self, x):
        m, x = self.layer, self.act(x)
        if isinstance(m, nn.ConvTranspose2d):
            w = fake_quant_weight(m.weight, 1)
            return F.conv_transpose2d(x, w, m.bias, m.stride, m.padding, m.output_padding, m.groups, m.dilation)
        if isinstance(m, nn.Conv2d):
            return m._conv_forward(x, fake_quant_weight(m.weight, 0), m.bias)
        return F.linear(x, fake_quant_weight(m.weight, 0), m.bias)


def simulate_int8(net: nn.Module) -> nn.Module:
    """Wrap every convolution and linear layer of the separation path in :class:`QuantLayer`, in place: not
    ``FLOAT_MODULES``, nor the condition path (embedding, condition generator, attention queries), whose
    outputs are constants of the frozen graph."""
    targets = []
    for name, module in net.named_modules():
        if name.split(".")[0] in FLOAT_MODULES + ("condition_generator", "embedding"):
            continue
        for child_name, child in module.named_children():
            if isinstance(child, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)) and child_name != "linear_query":
                targets.append((module, child_name, child))
    for module, child_name, child in targets:
        setattr(module, child_name, QuantLayer(child))
    return net


def plain_state(net: nn.Module) -> dict:
    """The student's weights under the network's own names (the wrappers' ``.layer`` dropped, no ranges)."""
    return {k.replace(".layer.", "."): v.detach().float().cpu().numpy() for k, v in net.state_dict().items()
            if not k.endswith(("num_batches_tracked", ".act.low", ".act.high", ".act.seen"))}  # fmt: skip


def distillation_loss(student_out, teacher_out, target, ref_weight: float, mix=None):
    """Squared distance to the teacher relative to the mixture's energy (``mix``; the teacher's output if
    None), plus ``ref_weight`` × the training loss against the target. Relative to the mixture, not to the
    teacher's output: quantisation noise follows the input's level, and a source that is silent in the
    excerpt would otherwise make one batch's loss explode."""
    energy = torch.sum((teacher_out if mix is None else mix) ** 2).clamp_min(1e-8)
    return torch.sum((student_out - teacher_out) ** 2) / energy + ref_weight * torch.mean((student_out - target) ** 2)


def qat(root: str, run_dir: str, weights: str, steps: int = 400, minutes: float = 1e9, frames: int = 64,
        batch_size: int = 2, lr: float = 1e-5, ref_weight: float = 0.003, seed: int = 0, threads=None,
        log_every: int = 20, progress: bool = True, export: bool = True) -> dict:
    """Fine-tune (or resume) in ``run_dir``; returns a summary. See the module docstring."""
    from training.train import MultitrackSet, batch, optimiser_step

    if threads:
        torch.set_num_threads(threads)
    config, tensors = load_weights(weights)
    teacher = ConditionedUNet.from_tensors(config, tensors).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    student = simulate_int8(ConditionedUNet.from_tensors(config, tensors)).eval()  # BN as exported: running stats
    opt = torch.optim.Adam([p for p in student.parameters() if p.requires_grad], lr=lr)
    os.makedirs(run_dir, exist_ok=True)
    ckpt = os.path.join(run_dir, "last.pt")
    rng = np.random.default_rng(seed)
    step, elapsed = 0, 0.0
    if os.path.exists(ckpt):
        state = torch.load(ckpt, weights_only=True)
        student.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step, elapsed = state["step"], state["elapsed"]
        rng.bit_generator.state = json.loads(state["rng"])
    for m in student.modules():  # ranges follow the data; everything else as in inference
        if isinstance(m, _Activation):
            m.train()
    data = MultitrackSet(root, "train")
    length = config.hop_length * (frames - 1)
    log = open(os.path.join(run_dir, "log.jsonl"), "a")
    start = time.time() - elapsed
    running = None
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=steps, initial=step, unit="step")
    while step < steps and time.time() - start < minutes * 60:
        mix, target, cond = batch(data, rng, batch_size, length, 0.5, "cpu")
        with torch.no_grad():
            teacher_out = teacher(mix, cond)
        running = optimiser_step(opt, distillation_loss(student(mix, cond), teacher_out, target, ref_weight, mix),
                                 running, bar, 0.95)  # fmt: skip
        step += 1
        if step % log_every == 0 or step == steps:
            # distance to the teacher relative to the mixture, in dB (higher = closer to the exact path)
            log.write(json.dumps({"step": step, "loss": running, "teacher_db": -10 * math.log10(max(running, 1e-12)),
                                  "seconds": round(time.time() - start, 1)}) + "\n")  # fmt: skip
            log.flush()
            torch.save({"model": student.state_dict(), "optimizer": opt.state_dict(), "step": step,
                        "elapsed": time.time() - start, "rng": json.dumps(rng.bit_generator.state)}, ckpt + ".tmp")  # fmt: skip
            os.replace(ckpt + ".tmp", ckpt)
    if bar is not None:
        bar.close()
    out = os.path.join(run_dir, "student.safetensors")
    save_weights(out, config, plain_state(student))
    if export:  # ~20 s on 2 cores
        from lightsaft_infer.export import export_onnx

        export_onnx(out, os.path.splitext(out)[0] + ".onnx")
    return {"step": step, "loss": running, "student": out, "teacher_digest": weights_digest(tensors),
            "seconds": time.time() - start}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.qat", description=__doc__.split("\n\n")[0])
    p.add_argument("root", help="MUSDB-layout folder with train/ (training songs only)")
    p.add_argument("run_dir")
    p.add_argument("--weights", required=True, help="the fp32 teacher (NAME.safetensors, with NAME.onnx beside it)")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--minutes", type=float, default=1e9, help="stop (resumably) after this much wall time")
    p.add_argument("--frames", type=int, default=64)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--ref-weight", type=float, default=0.003,
                   help="weight of the references' MSE beside the relative distance to the teacher (~0.03 at the start)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--int8", default=None, help="then quantise the student into this IR (e.g. weights/default.int8.xml)")
    p.add_argument("--calibration-songs", type=int, default=16)
    a = p.parse_args(argv)
    summary = qat(a.root, a.run_dir, a.weights, a.steps, a.minutes, a.frames, a.batch, a.lr, a.ref_weight,
                  threads=a.threads)  # fmt: skip
    print(json.dumps(summary))
    if a.int8 and summary["step"] >= a.steps:
        from training.quantize import quantize

        mixtures = sorted(glob.glob(os.path.join(a.root, "train", "*", "mixture.wav")))[: a.calibration_songs]
        report = quantize(os.path.splitext(summary["student"])[0] + ".onnx", mixtures, a.int8,
                          digest=summary["teacher_digest"], extra={"qat_steps": str(summary["step"])})  # fmt: skip
        print(f"{report['output']}: int8 of the QAT student, calibrated on {report['windows']} windows")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
