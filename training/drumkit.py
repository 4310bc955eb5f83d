"""Recorded drum kits (Debian's ``hydrogen-drumkits``) played from a ``compose`` drum track.

Hydrogen kits are folders of multi-sampled recordings (velocity layers) with a
``drumkit.xml`` naming each instrument. Instruments are matched to the General
MIDI roles the composer writes (kick, snare, hats, toms, cymbals, hand
percussion) by their names; a role a kit lacks falls back to a related one
(no ride: closed hat; no toms: snare), so any kit can play any groove. Each hit
picks the velocity layer of its velocity; the kit's own stereo samples keep
their room and overheads.
"""

from __future__ import annotations

import functools
import glob
import os
import re
import xml.etree.ElementTree as ET

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from .compose import CLAP, CRASH, HAT_C, HAT_O, HAT_P, KICK, RIDE, RIM, SHAKER, SNARE, TAMB, TOM_H, TOM_L, TOM_M

SAMPLE_RATE = 44100
KIT_ROOT = "/usr/share/hydrogen/data/drumkits"
#: Role → name patterns, in order of preference.
ROLES = {
    KICK: [r"kick", r"bass ?drum", r"\bbd\b", r"thump", r"bass$"],
    SNARE: [r"snare(?!.*(roll|rim))", r"snare", r"slap", r"\bsd\b"],
    RIM: [r"stick", r"rim", r"click", r"clave"],
    CLAP: [r"clap", r"snap"],
    HAT_C: [r"clos", r"\bch\b", r"hat(?!.*(open|op\b))", r"hh(?!.*(open|op))", r"shaker|maraca"],
    HAT_P: [r"pedal", r"hat.*pd", r"clos"],
    HAT_O: [r"open", r"hat.*op", r"ohh"],
    TOM_L: [r"(low|floor).*tom|tom.*(low|floor)", r"tom", r"tone"],
    TOM_M: [r"mid.*tom|tom.*(mid|2)", r"tom", r"tone"],
    TOM_H: [r"(hi|high).*tom|tom.*(hi|high|1)", r"tom", r"tone"],
    CRASH: [r"crash", r"splash", r"china", r"cymbal"],
    RIDE: [r"ride(?!.*bell)", r"ride", r"crash"],
    TAMB: [r"tamb", r"shaker|maraca", r"cowbell"],
    SHAKER: [r"shaker|maraca", r"tamb"],
}
FALLBACK = {RIDE: HAT_C, HAT_P: HAT_C, HAT_O: HAT_C, TOM_L: SNARE, TOM_M: SNARE, TOM_H: SNARE, CLAP: SNARE,
            RIM: SNARE, TAMB: HAT_C, SHAKER: HAT_C, CRASH: HAT_O}


def kits() -> list[str]:
    """Names of the installed kits (sorted: the corpus indexes them)."""
    return sorted(os.path.basename(os.path.dirname(p)) for p in glob.glob(os.path.join(KIT_ROOT, "*", "drumkit.xml")))


def _text(node, tag, default=""):
    child = node.find(tag)
    return child.text if child is not None and child.text is not None else default


@functools.lru_cache(maxsize=4)
def load_kit(name: str) -> dict:
    """``{GM key: [(min_velocity, max_velocity, (samples, 2) float32), ...]}`` for one kit."""
    folder = os.path.join(KIT_ROOT, name)
    root = ET.parse(os.path.join(folder, "drumkit.xml")).getroot()
    for el in root.iter():  # drop the XML namespace
        el.tag = el.tag.split("}")[-1]
    instruments = {}
    for inst in root.iter("instrument"):
        label = _text(inst, "name").strip().lower()
        layers = [(float(_text(l, "min", "0")), float(_text(l, "max", "1")), _text(l, "filename"))
                  for l in inst.findall("layer")] or [(0.0, 1.0, _text(inst, "filename"))]
        layers = [l for l in layers if l[2] and os.path.exists(os.path.join(folder, l[2]))]
        if label and layers and label not in instruments:
            instruments[label] = layers
    mapping = {}
    for role, patterns in ROLES.items():
        for pattern in patterns:
            hit = next((n for n in instruments if re.search(pattern, n)), None)
            if hit:
                mapping[role] = hit
                break
    for role, other in FALLBACK.items():
        if role not in mapping and other in mapping:
            mapping[role] = mapping[other]
    kit = {}
    for role, label in mapping.items():
        kit[role] = [(lo, hi, _read(os.path.join(folder, fn))) for lo, hi, fn in instruments[label]]
    if KICK not in kit or SNARE not in kit:
        raise RuntimeError(f"{folder}: no kick or snare found in drumkit.xml")
    return kit


def _read(path: str) -> np.ndarray:
    x, rate = sf.read(path, dtype="float32", always_2d=True)
    x = np.repeat(x, 2, axis=1) if x.shape[1] == 1 else x[:, :2]
    if rate != SAMPLE_RATE:
        x = resample_poly(x, SAMPLE_RATE, rate, axis=0).astype(np.float32)
    return x


def render(track, duration: float, kit_name: str, rng: np.random.Generator) -> np.ndarray:
    """The drum track's hits played on ``kit_name`` as ``(samples, 2)`` float32 (velocity picks the
    layer and scales it; a little random gain per hit, as a drummer's)."""
    kit = load_kit(kit_name)
    total = int(round(duration * SAMPLE_RATE))
    out = np.zeros((total + 2 * SAMPLE_RATE, 2), np.float32)
    jitter = rng.normal(0, 1.0, len(track.notes))
    for note, j in zip(track.notes, jitter):
        role = int(note.pitch)
        layers = kit.get(role) or kit.get(FALLBACK.get(role, SNARE)) or kit[SNARE]
        v = note.velocity / 127.0
        lo, hi, sample = next((l for l in layers if l[0] <= v <= l[1]), layers[-1])
        a = int(round(note.start * SAMPLE_RATE))
        if a >= total:
            continue
        piece = sample[: len(out) - a]
        out[a : a + len(piece)] += piece * float(v ** 0.8 * 10 ** (j / 20))
    return out[:total]
