"""Procedural song composition: a score of note events per stem, no audio.

A song is tempo + meter + key + a list of sections (intro / verse / chorus /
break / outro). Each section has a chord progression and a set of active
stems, so silence sections exist by construction. The score is plain data
(``Note`` lists per track) that ``render.py`` turns into sound.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

MAJOR = (0, 2, 4, 5, 7, 9, 11)
MINOR = (0, 2, 3, 5, 7, 8, 10)

# Progressions as scale degrees (0-based); chord = triad on that degree of the key's scale.
PROGRESSIONS = {
    "major": [(0, 4, 5, 3), (5, 3, 0, 4), (0, 3, 4, 3), (1, 4, 0, 0), (0, 5, 3, 4), (0, 3, 0, 4), (3, 4, 2, 5)],
    "minor": [(0, 5, 2, 6), (0, 3, 4, 0), (0, 6, 5, 6), (0, 3, 6, 2), (5, 6, 0, 0), (0, 4, 5, 3)],
}

# Which stems play in each section kind (vocals absent from intros and breaks:
# the separator must learn to output silence too).
SECTION_STEMS = {
    "intro": [("drums", "bass", "other"), ("other",), ("drums", "other"), ("bass", "other")],
    "verse": [("vocals", "drums", "bass", "other"), ("vocals", "bass", "other"), ("vocals", "drums", "bass")],
    "chorus": [("vocals", "drums", "bass", "other")],
    "break": [("drums",), ("drums", "bass"), ("other",), ("vocals", "other"), ("bass", "other")],
    "outro": [("drums", "bass", "other"), ("other",), ("vocals", "other")],
}
SECTION_BARS = {"intro": (2, 4), "verse": (8, 8), "chorus": (8, 8), "break": (2, 4), "outro": (2, 4)}
FORM = ["intro", "verse", "chorus", "verse", "chorus", "break", "chorus", "outro"]

# GM percussion keys.
KICK, SNARE, RIM, CLAP, HAT_C, HAT_P, HAT_O = 36, 38, 37, 39, 42, 44, 46
TOM_L, TOM_M, TOM_H, CRASH, RIDE, TAMB, SHAKER = 45, 47, 50, 49, 51, 54, 70


@dataclass
class Note:
    """One note: start and duration in seconds, MIDI pitch (float for the voice), velocity 1..127."""

    start: float
    duration: float
    pitch: float
    velocity: int
    syllable: int = 0


@dataclass
class Track:
    """A rendered part: stem it belongs to, GM program (``drum_kit`` for bank 128), pan -1..1, notes."""

    stem: str
    program: int
    notes: list = field(default_factory=list)
    pan: float = 0.0
    drums: bool = False
    role: str = ""


@dataclass
class Score:
    tempo: float
    beats_per_bar: int
    key: int
    mode: str
    duration: float
    sections: list  # (kind, start_s, end_s, active stems)
    tracks: list
    melody: list  # Notes of the lead voice (pitches in MIDI, may be doubled later)


class Composer:
    """Writes one song from a numpy Generator; ``programs`` gives the instrument pools of the split."""

    def __init__(self, rng: np.random.Generator, programs: dict, target_seconds: float):
        self.rng = rng
        self.programs = programs
        self.target = target_seconds

    def choice(self, seq):
        return seq[int(self.rng.integers(len(seq)))]

    def compose(self) -> Score:
        rng = self.rng
        tempo = float(rng.uniform(72, 150))
        beats = int(self.choice([4, 4, 4, 3]))
        key = int(rng.integers(12))
        mode = self.choice(["major", "major", "minor"])
        scale = MAJOR if mode == "major" else MINOR
        beat_s = 60.0 / tempo
        bar_s = beats * beat_s
        # Form: cut or repeat the standard form to reach the target length.
        form, total_bars = [], 0
        budget_bars = max(4, int(round(self.target / bar_s)))
        i = 0
        while total_bars < budget_bars:
            kind = FORM[i % len(FORM)] if i < len(FORM) else self.choice(["verse", "chorus", "break", "chorus"])
            lo, hi = SECTION_BARS[kind]
            bars = min(int(rng.integers(lo, hi + 1)), budget_bars - total_bars)
            if bars <= 0:
                break
            form.append((kind, bars))
            total_bars += bars
            i += 1
        progressions = {kind: self.choice(PROGRESSIONS[mode]) for kind in SECTION_STEMS}
        sections, t = [], 0.0
        for kind, bars in form:
            sections.append((kind, t, t + bars * bar_s, set(self.choice(SECTION_STEMS[kind])), bars))
            t += bars * bar_s
        duration = t
        # Every stem must sound somewhere in the song.
        for stem in ("vocals", "drums", "bass", "other"):
            if not any(stem in s[3] for s in sections):
                # in the verses and choruses; a song too short to have one gets it everywhere
                for s in [s for s in sections if s[0] in ("verse", "chorus")] or sections:
                    s[3].add(stem)
        tracks = []
        chords = []  # (start, end, root pitch class offset from key, triad pitch classes)
        for kind, start, end, active, bars in sections:
            prog = progressions[kind]
            chords_per_bar = self.choice([1, 1, 2]) if kind != "break" else 1
            step = bar_s / chords_per_bar
            for k in range(bars * chords_per_bar):
                degree = prog[k % len(prog)]
                triad = [scale[(degree + d) % 7] + 12 * ((degree + d) // 7) for d in (0, 2, 4)]
                chords.append((start + k * step, start + (k + 1) * step, triad, kind, active))
        tracks.append(self.drum_track(sections, beats, beat_s, bar_s))
        tracks.append(self.bass_track(chords, key, beat_s))
        tracks.extend(self.other_tracks(chords, key, beat_s, scale))
        melody = self.melody(sections, chords, key, scale, beat_s, bar_s, beats)
        return Score(tempo, beats, key, mode, duration, [s[:4] for s in sections], tracks, melody)

    # -- drums -----------------------------------------------------------------------------------
    def drum_track(self, sections, beats, beat_s, bar_s) -> Track:
        rng = self.rng
        track = Track("drums", int(self.choice(self.programs["drums"])), drums=True, role="kit")
        steps = beats * 4  # sixteenth grid
        style = self.choice(["rock", "rock", "half", "four", "shuffle"])
        hat = self.choice([HAT_C, HAT_C, RIDE, SHAKER])
        for kind, start, end, active, bars in sections:
            if "drums" not in active:
                continue
            kick = np.zeros(steps, bool)
            snare = np.zeros(steps, bool)
            if style == "four":
                kick[::4] = True
            else:
                kick[0] = True
                kick[int(self.choice([8, 10, 6])) % steps] = True
                if rng.random() < 0.5:
                    kick[int(rng.integers(steps))] = True
            if style == "half":
                snare[(steps // 2) % steps] = True
            else:
                snare[4::8] = True
            hat_every = int(self.choice([2, 2, 1, 4])) if style != "shuffle" else 3
            sub = beat_s / 4
            for bar in range(bars):
                t0 = start + bar * bar_s
                fill = bar == bars - 1 and kind != "outro" and rng.random() < 0.7
                for s in range(steps):
                    t = t0 + s * sub
                    swing = 0.0
                    vel_jit = int(rng.integers(-12, 12))
                    if fill and s >= steps // 2:
                        if rng.random() < 0.6:
                            tom = self.choice([SNARE, TOM_H, TOM_M, TOM_L])
                            track.notes.append(Note(t, sub, tom, 90 + vel_jit))
                        continue
                    if kick[s]:
                        track.notes.append(Note(t, sub, KICK, 105 + vel_jit))
                    if snare[s]:
                        track.notes.append(Note(t, sub, self.choice([SNARE, SNARE, CLAP, RIM]) if kind == "break" else SNARE, 100 + vel_jit))
                    if s % hat_every == 0:
                        accent = 20 if s % 4 == 0 else 0
                        track.notes.append(Note(t + swing, sub, hat, 60 + accent + vel_jit))
                if bar == 0 and kind in ("chorus", "verse"):
                    track.notes.append(Note(t0, beat_s, CRASH, 100))
        return track

    # -- bass ------------------------------------------------------------------------------------
    def bass_track(self, chords, key, beat_s) -> Track:
        rng = self.rng
        track = Track("bass", int(self.choice(self.programs["bass"])), role="bass")
        pattern = self.choice(["roots", "eighths", "root-fifth", "walk", "synco"])
        base = 28 + (key % 12)
        if base > 38:
            base -= 12
        for start, end, triad, kind, active in chords:
            if "bass" not in active:
                continue
            root = base + triad[0]
            fifth = root + 7 if root + 7 <= 55 else root - 5
            span = end - start
            n_beats = max(1, int(round(span / beat_s)))
            if pattern == "roots":
                hits = [(0, span * 0.9, root)]
            elif pattern == "eighths":
                hits = [(k * beat_s / 2, beat_s / 2 * 0.8, root) for k in range(n_beats * 2)]
            elif pattern == "root-fifth":
                hits = [(k * beat_s, beat_s * 0.85, root if k % 2 == 0 else fifth) for k in range(n_beats)]
            elif pattern == "walk":
                tones = [root, root + triad[1] - triad[0], fifth, root + 12 if root + 12 <= 55 else root]
                hits = [(k * beat_s, beat_s * 0.9, tones[k % 4]) for k in range(n_beats)]
            else:
                offs = [0, 0.75, 1.5, 2.5, 3.0]
                hits = [(o * beat_s, beat_s * 0.45, root if o != 2.5 else fifth) for o in offs if o < n_beats]
            for off, dur, pitch in hits:
                track.notes.append(Note(start + off, dur, int(pitch), int(rng.integers(80, 118))))
        return track

    # -- other: comping, pad, counter-melody ------------------------------------------------------
    def other_tracks(self, chords, key, beat_s, scale) -> list:
        rng = self.rng
        pool = self.programs["other"]
        n_parts = int(self.choice([1, 2, 2, 3]))
        roles = list(rng.permutation(["comp", "pad", "arp", "counter"]))[:n_parts]
        tracks = []
        for i, role in enumerate(roles):
            track = Track("other", int(self.choice(pool)), pan=float(rng.uniform(-0.7, 0.7)), role=role)
            octave = 48 + key % 12 if role in ("comp", "pad") else 60 + key % 12
            for start, end, triad, kind, active in chords:
                if "other" not in active:
                    continue
                pitches = [octave + p for p in triad]
                span = end - start
                n_beats = max(1, int(round(span / beat_s)))
                if role == "pad":
                    for p in pitches:
                        track.notes.append(Note(start, span * 0.98, p, int(rng.integers(55, 85))))
                elif role == "comp":
                    rhythm = self.choice([[0], [0, 2], [0, 1, 2, 3], [0.5, 1.5, 2.5, 3.5]])
                    for o in rhythm:
                        if o < n_beats:
                            for p in pitches:
                                track.notes.append(Note(start + o * beat_s, beat_s * 0.7, p, int(rng.integers(60, 100))))
                elif role == "arp":
                    seq = pitches + [pitches[1] + 12 - 12 * (pitches[1] + 12 > 96)]
                    for k in range(n_beats * 2):
                        track.notes.append(Note(start + k * beat_s / 2, beat_s / 2 * 0.9, seq[k % len(seq)], int(rng.integers(55, 95))))
                else:  # counter-melody: scale steps around the chord
                    p = pitches[2]
                    for k in range(n_beats):
                        if rng.random() < 0.75:
                            track.notes.append(Note(start + k * beat_s, beat_s * 0.95, int(p), int(rng.integers(60, 100))))
                        deg = int(rng.integers(-2, 3))
                        p = int(np.clip(p + deg, octave, octave + 19))
            tracks.append(track)
        return tracks

    # -- lead voice melody -------------------------------------------------------------------------
    def melody(self, sections, chords, key, scale, beat_s, bar_s, beats) -> list:
        """Phrases of 1-2 bars with rests, chord tones on strong beats, mostly stepwise motion."""
        rng = self.rng
        centre = self.programs["voice_centre"]
        notes = []
        scale_pitches = [p for p in range(centre - 12, centre + 13) if (p - key) % 12 in scale]
        idx = len(scale_pitches) // 2
        syll = 0
        for kind, start, end, active, bars in sections:
            if "vocals" not in active:
                continue
            t = start
            while t < end - beat_s:
                phrase_beats = beats * int(self.choice([1, 2, 2]))
                rest_beats = self.choice([1, 1, 2]) if rng.random() < 0.8 else 0
                pe = min(end, t + (phrase_beats - rest_beats) * beat_s)
                q = t + beat_s * self.choice([0, 0, 0.5])
                while q < pe - beat_s / 4:
                    dur_beats = self.choice([0.5, 0.5, 1, 1, 1, 1.5, 2]) if kind != "chorus" else self.choice([0.5, 1, 1, 2])
                    dur = min(dur_beats * beat_s, pe - q)
                    if dur < beat_s / 4:
                        break
                    step = int(self.choice([-2, -1, -1, 0, 1, 1, 2, 3, -3]))
                    idx = int(np.clip(idx + step, 2, len(scale_pitches) - 3))
                    # On downbeats snap to the nearest chord tone.
                    chord = next((c for c in chords if c[0] <= q < c[1]), None)
                    pitch = scale_pitches[idx]
                    if chord is not None and abs((q - start) / beat_s % beats) < 1e-6:
                        tones = [p for p in scale_pitches if (p - key) % 12 in [x % 12 for x in chord[2]]]
                        pitch = min(tones, key=lambda p: abs(p - pitch))
                        idx = scale_pitches.index(pitch)
                    legato = float(rng.uniform(0.75, 0.98))
                    notes.append(Note(q, dur * legato, float(pitch), int(rng.integers(70, 115)), syll))
                    syll += 1
                    q += dur
                t += phrase_beats * beat_s
        return notes
