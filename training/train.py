"""Train LightSAFT on any MUSDB18-HQ-layout folder, following the authors' recipe.

    python -m training.train ROOT RUN_DIR [--frames 64 --batch 4 --steps 20000 --minutes 90]

Recipe (LaSAFT/LightSAFT training code): the network maps the mixture's
complex spectrogram ("complex as channels") to the target source's, with a
random condition per example and mean-squared error on the complex
spectrogram; Adam. Examples are remixed on the fly: each stem from a random
song and offset (or, with probability ``--coherent``, all stems from the same
place of one song), random gain per stem and random channel swap; ``--timbre`` adds
re-pitching and random EQ per stem, ``--saturate P`` a random waveshaper on each stem with
probability P, ``--fx P`` a random chain of drive, modulation and echoes, ``--reverb P`` a random synthetic
reverb (``augment.py``).

Training windows may be shorter than the network's ``num_frame`` (256): the net
is convolutional in time, frames need only be a multiple of 16. ``RUN_DIR``
gets ``last.pt`` (resumable: model, optimiser, step, RNG), ``log.jsonl``
(train/valid loss, valid SDR) and ``best.safetensors`` (+ ``best.onnx``) in the engine's
weight format, written whenever the validation SDR improves (:func:`evaluate`).
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import time

import numpy as np
import soundfile as sf
import torch

from lightsaft_infer.config import SOURCES, ModelConfig
from lightsaft_infer.network import ConditionedUNet
from lightsaft_infer.weights import save_weights
from training.augment import SEMITONES, StemEffects, random_eq, repitch, repitch_span

#: The MDX submission's LightSAFT configuration ("lightsaft_small" in the architecture notes).
MDX_CONFIG = ModelConfig(
    block="lightsaft", n_fft=2048, hop_length=1024, num_frame=256, n_blocks=9, internal_channels=16,
    n_internal_layers=5, kernel_size_t=3, kernel_size_f=3, bn_factor=16, min_bn_units=16,
    tfc_tdf_bias=False, num_tdfs=16, dk=64, embedding_dim=64,
)


def song_recipe(song_dir: str) -> str:
    """The corpus recipe recorded in ``song_dir/song.json`` by ``training.corpus`` ("gm" for songs from before
    the wide recipe; with its version from version 2 on, "wide v2"); "other" for folders without one, e.g.
    MUSDB18-HQ."""
    try:
        with open(os.path.join(song_dir, "song.json")) as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return "other"
    version = meta.get("recipe_version")
    return meta.get("recipe", "gm") + (f" v{version}" if version else "")


class MultitrackSet:
    """Random stereo excerpts of the four stems of a MUSDB-layout split, read from disk on demand."""

    def __init__(self, root: str, split: str):
        self.folder = os.path.join(root, split)
        self.songs, self.frames, self.song_recipes = [], np.zeros(0, int), []
        self.refresh()
        if not self.songs:
            raise SystemExit(f"{self.folder}: no songs with {', '.join(SOURCES)} stems")

    def refresh(self) -> None:
        """Pick up songs added since the last scan (the corpus may still be growing)."""
        found = sorted(d for d in glob.glob(os.path.join(self.folder, "*"))
                       if all(os.path.exists(os.path.join(d, f"{s}.wav")) for s in SOURCES))
        new = [d for d in found if d not in set(self.songs)]
        self.songs += new
        self.song_recipes += [song_recipe(d) for d in new]  # read once per song, not at every validation
        self.frames = np.concatenate([self.frames, [sf.info(os.path.join(d, "mixture.wav")).frames for d in new]]).astype(int)

    def recipes(self) -> dict:
        """``{recipe: songs}`` of the songs found so far (see :func:`song_recipe`)."""
        counts: dict = {}
        for recipe in self.song_recipes:
            counts[recipe] = counts.get(recipe, 0) + 1
        return dict(sorted(counts.items()))

    def read(self, song: int, source: str, start: int, length: int) -> np.ndarray:
        """``(length, 2)`` float32 of one stem, zero-padded past the end; mono is duplicated."""
        x, _ = sf.read(os.path.join(self.songs[song], f"{source}.wav"), start=start, frames=length,
                       dtype="float32", always_2d=True)
        if x.shape[1] == 1:
            x = np.repeat(x, 2, axis=1)
        if len(x) < length:
            x = np.pad(x, ((0, length - len(x)), (0, 0)))
        return x

    def random_place(self, rng: np.random.Generator, length: int) -> tuple[int, int]:
        song = int(rng.choice(len(self.songs), p=self.frames / self.frames.sum()))
        return song, int(rng.integers(0, max(1, self.frames[song] - length)))

    def example(self, rng: np.random.Generator, length: int, coherent: float, augment: bool = True,
                condition_p=None, timbre: bool = False, stem_fx: StemEffects = StemEffects()):
        """``(stems (4, length, 2), condition)`` with the stems in SOURCES order.

        ``condition_p``: probability of each source as the target (SOURCES order); uniform if None.
        ``timbre``: also re-pitch (p 0.3) and randomly equalise (p 0.5) each stem (``augment.py``).
        ``stem_fx``: the per-stem effects (waveshaper, effects chain, reverb) and how often each is drawn.
        """
        stems = []
        place = self.random_place(rng, length) if rng.random() < coherent else None
        for source in SOURCES:
            song, start = place if place is not None else self.random_place(rng, length)
            semitones = int(rng.choice(SEMITONES)) if timbre and rng.random() < 0.3 else 0
            if semitones:
                x = repitch(self.read(song, source, start, repitch_span(length, semitones)), semitones, length)
            else:
                x = self.read(song, source, start, length)
            x = stem_fx(x, rng)
            if augment:
                x = x * rng.uniform(0.25, 1.25)
                if rng.random() < 0.5:
                    x = x[:, ::-1]
            if timbre and rng.random() < 0.5:
                x = random_eq(x, rng)
            stems.append(x)
        return np.stack(stems), int(rng.choice(len(SOURCES), p=condition_p))


def complex_channels(wave: torch.Tensor, cfg: ModelConfig) -> torch.Tensor:
    """``(B, samples, 2)`` → ``(B, 4, T, n_fft/2+1)`` as [re_L, re_R, im_L, im_R], the authors' STFT."""
    B, n, _ = wave.shape
    spec = torch.stft(wave.transpose(1, 2).reshape(B * 2, n), cfg.n_fft, cfg.hop_length,
                      window=torch.hann_window(cfg.n_fft, device=wave.device), center=True,
                      pad_mode="reflect", return_complex=True)  # (B*2, F, T)
    spec = torch.view_as_real(spec).reshape(B, 2, spec.shape[1], spec.shape[2], 2)  # (B, ch, F, T, re/im)
    return spec.permute(0, 4, 1, 3, 2).reshape(B, 4, spec.shape[3], spec.shape[2])


def batch(dataset: MultitrackSet, rng, size: int, length: int, coherent: float, device, augment=True,
          condition_p=None, timbre: bool = False, stem_fx: StemEffects = StemEffects()):
    """Mixture and target spectrograms ``(B, 4, T, F)`` and conditions ``(B,)``."""
    examples = [dataset.example(rng, length, coherent, augment, condition_p, timbre, stem_fx)
                for _ in range(size)]
    stems = torch.from_numpy(np.stack([e[0] for e in examples])).to(device)  # (B, 4, length, 2)
    cond = torch.tensor([e[1] for e in examples], device=device)
    mix = stems.sum(1)
    target = stems[torch.arange(size, device=device), cond]
    return complex_channels(mix, MDX_CONFIG), complex_channels(target, MDX_CONFIG), cond


def export(net: ConditionedUNet, cfg: ModelConfig, path: str, onnx: bool = True) -> None:
    """Write the engine's weight file (and its ONNX graph) from a training network."""
    tensors = {k: v.detach().float().cpu().numpy() for k, v in net.state_dict().items()
               if not k.endswith("num_batches_tracked")}
    save_weights(path, cfg, tensors)
    if onnx:
        from lightsaft_infer.export import export_onnx

        export_onnx(path, os.path.splitext(path)[0] + ".onnx")


def validation_set(root: str, frames: int, n: int, seed: int = 1234, fx_p: float = 0.0):
    """A fixed list of coherent validation batches (same every evaluation, every run); ``fx_p``: each stem
    through a random effects chain with this probability (seeded like the rest, so also fixed)."""
    data = MultitrackSet(root, "valid")
    rng = np.random.default_rng(seed)
    length = MDX_CONFIG.hop_length * (frames - 1)
    return [batch(data, rng, 4, length, coherent=1.0, device="cpu", augment=False, stem_fx=StemEffects(fx=fx_p))
            for _ in range(n)]


#: Suffix of the validation set made of the first root's songs through effects (``--valid-fx``).
FX_VALID = " (effects)"


def validation_sets(roots, frames: int, n: int, fx_p: float = 0.0) -> dict:
    """``{root: batches}``: ``n`` fixed batches from each root's ``valid/`` (e.g. the wide recipe's and the GM
    recipe's), and with ``fx_p`` the first root's again with effects on its stems (``root + FX_VALID``): the
    best checkpoint is chosen on in-distribution material and on material through effects no valid song has."""
    sets = {r: validation_set(r, frames, n) for r in roots}
    if fx_p:
        sets[roots[0] + FX_VALID] = validation_set(roots[0], frames, n, fx_p=fx_p)
    return sets


#: The validation SDR's floor: each example's error and target power get the mixture's power this many dB down added,
#: so that an example whose target is silent scores at most 0 dB instead of an unbounded ratio of two tiny numbers.
SDR_FLOOR_DB = 30.0


def evaluate(net, batches, device) -> tuple[float, float]:
    """Validation ``(loss, sdr)`` over fixed ``(mix, target, cond)`` batches of ``(B, 4, T, F)`` spectrograms.

    ``loss``: the training loss (complex-spectrogram MSE), whose mean is ruled by the loudest examples.
    ``sdr``: the mean over examples of 10·log10((‖s‖² + δ) / (‖ŝ − s‖² + δ)) in dB, δ the mixture's power
    :data:`SDR_FLOOR_DB` down: every example weighs the same whatever its loudness, as every song does in the MDX
    score, so the best checkpoint is chosen on it (higher is better).
    """
    net.eval()
    losses, sdrs = [], []
    with torch.no_grad():
        for m, t, c in batches:
            m, t = m.to(device), t.to(device)
            err = net(m, c.to(device)) - t
            losses.append(torch.mean(err ** 2).item())
            floor = m.pow(2).sum((1, 2, 3)) * 10 ** (-SDR_FLOOR_DB / 10)  # (B,)
            ratio = (t.pow(2).sum((1, 2, 3)) + floor) / (err.pow(2).sum((1, 2, 3)) + floor)
            sdrs += (10 * torch.log10(ratio)).tolist()
    net.train()
    return float(np.mean(losses)), float(np.mean(sdrs))


def optimiser_step(opt, loss, running, bar, decay: float):
    """Backpropagate ``loss``, step ``opt``; returns the loss's running average (``decay`` per step), shown on
    ``bar`` (a tqdm bar or None)."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    running = loss.item() if running is None else decay * running + (1 - decay) * loss.item()
    if bar is not None:
        bar.update(1)
        bar.set_postfix(loss=f"{running:.4g}")
    return running


def train(root: str, run_dir: str, frames: int = 64, batch_size: int = 4, steps: int = 20000, minutes: float = 1e9,
          lr: float = 1e-3, coherent: float = 0.5, valid_every: int = 200, valid_batches: int = 16, seed: int = 0,
          threads: int | None = None, onnx: bool = True, progress: bool = True, precision: str = "bf16",
          init: str | None = None, condition_p=None, extra_valid=(), timbre: bool = False, ema: float = 0.0,
          stem_fx: StemEffects = StemEffects(), valid_fx_p: float = 0.0) -> dict:
    """Train (or resume) in ``run_dir``; returns a summary dict. See the module docstring.

    ``ema``: if > 0, validate and export an exponential moving average of the weights (and BatchNorm
    statistics) with this decay per step instead of the last weights.
    """
    cfg = MDX_CONFIG
    if frames % cfg.frame_multiple:
        raise SystemExit(f"--frames must be a multiple of {cfg.frame_multiple}")
    if threads:
        torch.set_num_threads(threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    os.makedirs(run_dir, exist_ok=True)
    torch.manual_seed(seed)
    net = ConditionedUNet(cfg).to(device).train()
    if init and not os.path.exists(os.path.join(run_dir, "last.pt")):  # start from exported weights
        from lightsaft_infer.weights import load_weights

        _, tensors = load_weights(init)
        net.load_state_dict({k: torch.as_tensor(v) for k, v in tensors.items()}, strict=False)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    averaged = None
    if ema:  # torch's own EMA: parameters and buffers, the first update copies the network
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        averaged = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(ema), use_buffers=True)
    rng = np.random.default_rng(seed)
    step, best, elapsed = 0, -math.inf, 0.0  # best: the highest validation SDR so far
    valid_keys = None
    ckpt = os.path.join(run_dir, "last.pt")
    if os.path.exists(ckpt):  # our own file: tensors and plain values only, so weights_only loading works
        state = torch.load(ckpt, map_location=device, weights_only=True)
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step, best, elapsed = state["step"], state["best"], state["elapsed"]
        valid_keys = state.get("valid_keys")
        if state.get("best_by") != "valid_sdr":  # a checkpoint from when the best was the lowest loss
            best = -math.inf
        if averaged is not None and "ema" in state:  # (a run that turns --ema on later starts its average here)
            averaged.load_state_dict(state["ema"])
        for group in opt.param_groups:  # the command line's rate wins: lowering it on resume is the schedule
            group["lr"] = lr
        if "rng" in state:  # the data stream goes on where it stopped: a resumed run equals an uninterrupted one
            rng.bit_generator.state = json.loads(state["rng"])
            torch.set_rng_state(state["torch_rng"])
        else:  # a checkpoint from before the RNG was saved
            rng = np.random.default_rng([seed, step])
    data = MultitrackSet(root, "train")
    valid = validation_sets([root, *extra_valid], frames, valid_batches, valid_fx_p)
    if valid_keys is not None and sorted(valid) != valid_keys:  # best was measured on other validation sets
        best = -math.inf
    length = cfg.hop_length * (frames - 1)
    log = open(os.path.join(run_dir, "log.jsonl"), "a")
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=steps, initial=step, unit="step")
    start = time.time() - elapsed
    running = None
    # bf16 autocast: tensor cores on CUDA, AVX512-BF16/AMX through oneDNN on recent CPUs (1.6x faster
    # per step than fp32 on this project's 2-core EPYC). The loss and optimiser stay fp32.
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16")
    while step < steps and (time.time() - start) < minutes * 60:
        mix, target, cond = batch(data, rng, batch_size, length, coherent, device, condition_p=condition_p,
                                  timbre=timbre, stem_fx=stem_fx)
        with autocast:
            est = net(mix, cond)
        running = optimiser_step(opt, torch.mean((est.float() - target) ** 2), running, bar, 0.98)
        if averaged is not None:
            averaged.update_parameters(net)
        step += 1
        if step % valid_every == 0 or step == steps:
            judged = net if averaged is None else averaged.module  # what best.safetensors would hold
            per_root = {r: evaluate(judged, b, device) for r, b in valid.items()}
            # each root weighs the same, whatever its loudness
            v, sdr = (float(np.mean([m[i] for m in per_root.values()])) for i in (0, 1))
            data.refresh()
            several = len(per_root) > 1
            record = {"step": step, "train_loss": running, "valid_loss": v, "valid_sdr": sdr,
                      "seconds": round(time.time() - start, 1),
                      "valid_losses": {r: m[0] for r, m in per_root.items()} if several else None,
                      "valid_sdrs": {r: m[1] for r, m in per_root.items()} if several else None,
                      "train_songs": len(data.songs), "train_recipes": data.recipes(), "lr": lr,
                      "condition_p": None if condition_p is None else [round(float(v), 3) for v in condition_p],
                      "timbre": timbre, "ema": ema or None, **stem_fx.logged()}
            log.write(json.dumps(record) + "\n")
            log.flush()
            if sdr > best:
                best = sdr
                export(judged, cfg, os.path.join(run_dir, "best.safetensors"), onnx=False)
            torch.save({"model": net.state_dict(), "optimizer": opt.state_dict(), "step": step, "best": best,
                        "elapsed": time.time() - start, "rng": json.dumps(rng.bit_generator.state),
                        "torch_rng": torch.get_rng_state(), "valid_keys": sorted(valid), "best_by": "valid_sdr",
                        **({"ema": averaged.state_dict()} if averaged is not None else {})}, ckpt + ".tmp")
            os.replace(ckpt + ".tmp", ckpt)
    if bar is not None:
        bar.close()
    best_path = os.path.join(run_dir, "best.safetensors")
    if onnx and os.path.exists(best_path):  # once at the end: the export costs ~20 s on 2 cores
        from lightsaft_infer.export import export_onnx

        export_onnx(best_path, os.path.join(run_dir, "best.onnx"))
    return {"step": step, "best_valid_sdr": best, "seconds": time.time() - start, "device": device}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.train", description=__doc__.split("\n\n")[0])
    p.add_argument("root", help="MUSDB18-HQ-layout folder with train/ and valid/")
    p.add_argument("run_dir")
    p.add_argument("--frames", type=int, default=64, help="STFT frames per training window (multiple of 16)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=20000)
    p.add_argument("--minutes", type=float, default=1e9, help="stop (resumably) after this much wall time")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--coherent", type=float, default=0.5, help="probability that an example's stems come from one place")
    p.add_argument("--valid-every", type=int, default=200)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--precision", choices=("bf16", "fp32"), default="bf16", help="autocast precision of the forward pass")
    p.add_argument("--no-onnx", action="store_true")
    p.add_argument("--condition-p", default=None,
                   help="probability of each target source, 'vocals,drums,bass,other' (default uniform, as the authors)")
    p.add_argument("--init", default=None, help="start from these weights (.safetensors), e.g. weights/default.safetensors")
    p.add_argument("--timbre", action="store_true",
                   help="timbre augmentation: re-pitch (±1–2 semitones) and random EQ per stem (training/augment.py)")
    p.add_argument("--saturate", type=float, default=0.0, metavar="P",
                   help="probability of a random waveshaper (soft/cubic/hard clipping) on each stem (training/augment.py)")
    p.add_argument("--fx", type=float, default=0.0, metavar="P",
                   help="probability of a random effects chain (drive, chorus/flanger/phaser, echoes) on each stem")
    p.add_argument("--reverb", type=float, default=0.0, metavar="P",
                   help="probability of a random synthetic reverb (room or plate) on each stem")
    p.add_argument("--valid-fx", type=float, default=0.0, metavar="P",
                   help="also validate on ROOT's valid songs with an effects chain on each stem with probability P")
    p.add_argument("--ema", type=float, default=0.0,
                   help="validate and export an exponential moving average of the weights with this decay (e.g. 0.999)")
    p.add_argument("--extra-valid", nargs="*", default=[],
                   help="more MUSDB-layout roots whose valid/ joins the validation (mean over roots)")
    a = p.parse_args(argv)
    for name in ("saturate", "fx", "valid_fx", "reverb"):
        if not 0.0 <= getattr(a, name) <= 1.0:
            p.error(f"--{name.replace('_', '-')} is a probability, between 0 and 1")
    condition_p = None
    if a.condition_p:
        condition_p = np.array([float(v) for v in a.condition_p.split(",")])
        if len(condition_p) != len(SOURCES) or (condition_p < 0).any() or condition_p.sum() <= 0:
            p.error(f"--condition-p needs {len(SOURCES)} non-negative numbers ({','.join(SOURCES)})")
        condition_p = condition_p / condition_p.sum()
    summary = train(a.root, a.run_dir, a.frames, a.batch, a.steps, a.minutes, a.lr, a.coherent, a.valid_every,
                    threads=a.threads, onnx=not a.no_onnx, precision=a.precision, init=a.init,
                    condition_p=condition_p, extra_valid=a.extra_valid, timbre=a.timbre,
                    ema=a.ema, stem_fx=StemEffects(a.saturate, a.fx, a.reverb), valid_fx_p=a.valid_fx)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
