"""How much of a window's work the v2 networks share between sources (docs/networks.md).

Times, on the torch fp32 frozen graph of each weight file given, one window's
condition-free part (first_conv, encoders, mid block) and one source's decoder
path, and reports the share and the saving against running the whole network
once per source (what the authors' inference does)::

    python -m training.shared_stem weights/v2_light.safetensors ... [--repeat 3]
"""

from __future__ import annotations

import argparse
import time


def measure(path, repeat: int = 3) -> dict:
    import torch

    from lightsaft_infer.families import build_network, frozen_graph
    from lightsaft_infer.weights import load_weights

    config, tensors = load_weights(path)
    graph = frozen_graph(build_network(config, tensors, path))
    spec = torch.randn(1, 4, config.num_frame, config.n_bins) * 0.5
    with torch.inference_mode():
        mid, skips = graph.encode(spec)
        graph.branch(0, mid, skips)  # warm-up
        t_stem = min(_time(lambda: graph.encode(spec)) for _ in range(repeat))
        t_branch = min(_time(lambda: graph.branch(0, mid, skips)) for _ in range(repeat))
    S = len(config.sources)
    shared, unshared = t_stem + S * t_branch, S * (t_stem + t_branch)
    return {"weights": str(path), "network": config.title, "stem_s": t_stem, "decoder_s": t_branch,
            "stem_share": t_stem / (t_stem + t_branch), "window_s_shared": shared, "window_s_per_source": unshared,
            "saving": 1 - shared / unshared}  # fmt: skip


def _time(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("weights", nargs="+", help="v2-family .safetensors files")
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv)
    from lightsaft_infer.cpu import describe

    print(f"CPU: {describe()}")
    print(f"{'network':>34} {'stem s':>8} {'decoder s':>10} {'stem share':>11} {'window s':>9} {'unshared s':>11} {'saving':>7}")
    for path in args.weights:
        r = measure(path, args.repeat)
        print(f"{r['network']:>34} {r['stem_s']:8.3f} {r['decoder_s']:10.3f} {r['stem_share']:11.1%} "
              f"{r['window_s_shared']:9.3f} {r['window_s_per_source']:11.3f} {r['saving']:7.1%}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
