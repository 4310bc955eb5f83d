"""Choose the chunking by measurement: MDX SDR against cost for several overlap/trim settings.

    python -m training.overlap_study ROOT --weights weights/default.onnx --songs 8

For each setting the same test songs are separated and scored (mean MDX SDR
over songs and stems); cost is the number of network windows per minute of
audio, counted for a 4-minute song (the short test songs would overstate the
edges); wall time is proportional to it. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from lightsaft_infer.evaluate import evaluate
from lightsaft_infer.separator import Separator

SETTINGS = (  # (mode, overlap, trim)
    ("authors", 0.0, None),  # = overlap 0, trim 8192
    ("overlap", 0.0, 0),
    ("overlap", 0.0, 2048),
    ("overlap", 0.0, 4096),
    ("overlap", 0.125, 4096),
    ("overlap", 0.125, 8192),
    ("overlap", 0.25, 8192),
)


def study(root, weights, songs: int, backend: str = "onnx") -> list:
    rows = []
    for mode, overlap, trim in SETTINGS:
        sep = Separator.from_file(weights, backend=backend, mode=mode, overlap=overlap, trim=trim)
        t = time.perf_counter()
        report = evaluate(sep, root, "test", limit=songs, bss=False)
        wall = time.perf_counter() - t
        windows_4min = sep.plan(240 * sep.sample_rate).n_windows
        sdr = report["summary"]["model"]
        rows.append({"mode": mode, "overlap": overlap, "trim": sep.plan(0).trim,
                     "windows_per_minute": windows_4min / 4, "wall_s": wall,
                     "mdx_sdr": {s: sdr[s]["mdx"] for s in list(sep.sources) + ["mean"]}})
    return rows


def table(rows: list) -> str:
    lines = ["| chunking | trim | windows / min | wall s | vocals | drums | bass | other | mean MDX SDR |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        name = "authors (no fade)" if r["mode"] == "authors" else f"overlap {r['overlap']:g}"
        s = r["mdx_sdr"]
        lines.append(f"| {name} | {r['trim']} | {r['windows_per_minute']:.2f} | {r['wall_s']:.0f} | "
                     + " | ".join(f"{s[k]:.3f}" for k in ("vocals", "drums", "bass", "other", "mean")) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.overlap_study", description=__doc__.split("\n\n")[0])
    p.add_argument("root")
    p.add_argument("--weights", default=None)
    p.add_argument("--songs", type=int, default=8)
    p.add_argument("--backend", default="onnx")
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    rows = study(a.root, a.weights, a.songs, a.backend)
    print(table(rows))
    if a.json:
        json.dump(rows, open(a.json, "w"), indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
