"""``lightsaft-infer``: a thin command line over the public API.

    lightsaft-infer separate song.wav other.flac -o separated/
    lightsaft-infer batch music/ -o separated/ [--workers 2 | --scheduler tcp://host:8786] [--report]
    lightsaft-infer report separated/
    lightsaft-infer models
    lightsaft-infer pull lasaft-v2-light
    lightsaft-infer separate song.wav -m lasaft-v2-light
    lightsaft-infer convert epoch=694.ckpt -o weights/mine.safetensors --onnx
    lightsaft-infer export weights/mine.safetensors
    lightsaft-infer info weights/mine.safetensors
    lightsaft-infer bench --durations 60 240 --song data/test/<song> --plot bench.png
    lightsaft-infer evaluate corpus/ --split test
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from .backends import BACKENDS, module_available
from .chunking import AUTHORS_HELP, DEFAULT_OVERLAP, DEFAULT_TRIM, MODES
from .errors import LightsaftError
from .postfilter import POSTFILTERS

PROG = "lightsaft-infer"


def _song_folders(files, out) -> dict:
    """``{input: OUT/<song>}``; two inputs that would share a folder are refused before any work."""
    folders, seen = {}, {}
    for path in files:
        folder = os.path.join(out, os.path.splitext(os.path.basename(path))[0])
        key = os.path.normcase(os.path.abspath(folder))
        if key in seen and os.path.abspath(seen[key]) != os.path.abspath(path):
            raise LightsaftError(path, f"would be written to {folder}/, like {seen[key]}; "
                                       "separate them into different -o folders or rename one")
        seen[key] = path
        folders[path] = folder
    return folders


def _separate(args) -> int:
    from tqdm import tqdm

    from .audio import AudioReader
    from .separator import Separator

    unique = {}
    for path in args.files:  # one file named twice (s5.wav ./s5.wav) is one song, separated once
        key = os.path.realpath(path)
        if key in unique:
            _say(f"warning: {path} is {unique[key]} named again; separated once")
            continue
        unique[key] = path
    args.files = list(unique.values())
    folders = _song_folders(args.files, args.out)
    failed = 0
    readable = []
    for path in args.files:  # missing and unreadable files are reported before the model loads
        try:
            AudioReader(path).close()
            readable.append(path)
        except LightsaftError as err:
            print(f"{PROG}: error: {err}", file=sys.stderr)
            failed += 1
    if not readable:
        return 1
    sep = Separator.from_file(_weights(args), backend=args.backend, threads=args.threads, mode=args.mode,
                              overlap=args.overlap, trim=args.trim, batch_size=args.batch_size,
                              postfilter=args.postfilter, iterations=args.iterations, shifts=args.shifts)  # fmt: skip
    print(f"{PROG}: {sep.describe()}", file=sys.stderr)
    stems = [s for s in sep.sources if not args.stems or s in args.stems]
    for path in readable:
        song = os.path.basename(folders[path])
        out = {s: os.path.join(folders[path], f"{s}.{args.format}") for s in stems}
        with tqdm(total=None, unit="window", desc=song, disable=args.quiet, leave=False) as bar:

            def progress(done, total):
                bar.total = total
                bar.update(done - bar.n)

            try:
                result = sep.separate_file(path, out, subtype=args.subtype, progress=progress)
            except LightsaftError as err:
                bar.close()
                print(f"{PROG}: error: {err}", file=sys.stderr)
                failed += 1
                continue
        for warning in result.warnings:
            print(f"{PROG}: warning: {warning}", file=sys.stderr)
        print(f"{path}: {result.duration:.1f} s separated in {result.wall:.1f} s (RTF {result.rtf:.2f}) "
              f"-> {os.path.join(args.out, song)}/")  # fmt: skip
    return 1 if failed else 0


def _weights(args):
    """``-w``/``-m`` as a weight file: a catalogue name is pulled on first use (with a progress bar)."""
    from .models import resolve

    value = args.weights or os.environ.get("LIGHTSAFT_WEIGHTS") or None
    return resolve(value, pull_missing=True, progress=not getattr(args, "quiet", False), log=_say)


def _say(line: str) -> None:
    print(f"{PROG}: {line}", file=sys.stderr)


def _models(args) -> int:
    from .models import table

    print(table())
    return 0


def _pull(args) -> int:
    from .models import pull

    if args.file and len(args.names) != 1:
        raise LightsaftError(None, "--file verifies one checkpoint: name one model")
    args.interrupted = "the partial download is kept; pull again to resume"
    for name in args.names:
        path = pull(name, file=args.file, config=args.config, mirror=args.mirror, force=args.force,
                    progress=not args.quiet, log=_say)
        print(f"{name}: {path}")
    return 0


def _submission(args) -> int:
    from .submission import build

    args.interrupted = "no submission folder was left"
    build(args.weights, args.challenge, args.out, songs=args.songs, check=not args.no_check, log=print)
    return 0


def _convert(args) -> int:
    from .checkpoint import convert_checkpoint
    from .weights import save_weights

    config, tensors = convert_checkpoint(args.checkpoint, args.config)
    if not args.output.endswith(".safetensors"):
        raise LightsaftError(args.output, "the output must be NAME.safetensors")
    if args.onnx:
        require("onnx", "torch", "convert --onnx")
    from .shapes import check_shapes

    check_shapes(config, tensors, args.checkpoint)  # the sizes, with or without torch, before anything is written
    if module_available("torch"):  # and the whole network, where torch can build it
        from .families import build_network

        build_network(config, tensors, args.checkpoint)
    existed = os.path.exists(args.output)
    save_weights(args.output, config, tensors)
    print(f"{args.output}: {config.title} model, {sum(t.size for t in tensors.values()):,} values")
    if args.onnx:
        try:
            return _export(argparse.Namespace(weights=args.output, output=None))
        except BaseException:  # all or nothing: no weight file without the export that was asked for
            if not existed:
                os.unlink(args.output)
            raise
    return 0


def _export(args) -> int:
    from .export import export_onnx

    require("torch", "torch", "export")
    require("onnx", "torch", "export")
    output = args.output or os.path.splitext(args.weights)[0] + ".onnx"
    export_onnx(args.weights, output)
    print(f"{output}: ONNX export of {args.weights}")
    return 0


def _info(args) -> int:
    from .backends import named_weights

    args.weights = os.fspath(named_weights(args.weights))
    if args.weights.endswith(".onnx"):
        from .export import onnx_config, onnx_session

        config = onnx_config(onnx_session(args.weights), args.weights)
    else:
        from .weights import read_config

        config = read_config(args.weights)
    print(json.dumps(config.to_dict(), indent=2))
    from . import cpu

    # stdout stays the configuration (JSON); the machine goes to stderr
    print(f"# {config.title}; this CPU: {cpu.describe()}; fast paths that can pay here: {cpu.worthwhile_paths()}",
          file=sys.stderr)  # fmt: skip
    return 0


def _bench(args) -> int:
    from .bench import run_bench

    if args.roofline:
        return _roofline(args)
    if args.plot:
        require("matplotlib", "plot", "bench --plot")
    report = run_bench(_weights(args), args.durations, args.backends, reference=args.reference, mode=args.mode,
              overlap=args.overlap, trim=args.trim, json_path=args.json, threads=args.threads, song_dir=args.song,
              reference_max=args.reference_max, plot_path=args.plot, postfilter=args.postfilter,
              iterations=args.iterations, shifts=args.shifts)  # fmt: skip
    from .bench import failed_paths

    failures = failed_paths(report)
    for line in failures:
        print(f"{PROG}: error: bench: {line}", file=sys.stderr)
    return 1 if failures else 0


def _roofline(args) -> int:
    import pathlib

    from .backends import default_weights
    from .evaluate import write_json
    from .roofline import format_roofline, roofline

    require("onnx", "torch", "bench --roofline (it reads the export's shapes)")
    onnx_path = pathlib.Path(_weights(args) or default_weights()).with_suffix(".onnx")
    report = roofline(onnx_path, args.backends or ["onnx"], args.threads)
    print(format_roofline(report))
    if args.json:
        write_json(report, args.json)
    return 0


def _evaluate(args) -> int:
    from .evaluate import evaluate, format_table, song_folders, write_json
    from .separator import Separator

    if not args.no_bss:
        require("museval", "eval", "BSS-Eval (evaluate without --no-bss)")
    song_folders(args.root, args.split)  # a bad folder is reported before the model loads
    sep = Separator.from_file(_weights(args), backend=args.backend, threads=args.threads, mode=args.mode,
                              overlap=args.overlap, trim=args.trim, postfilter=args.postfilter,
                              iterations=args.iterations, shifts=args.shifts)  # fmt: skip
    bar = None
    if not args.quiet:
        from tqdm import tqdm

        bar = tqdm(unit="song", desc=f"evaluate {args.split}")

    def progress(done, total):
        bar.total = total
        bar.update(done - bar.n)

    report = evaluate(sep, args.root, args.split, limit=args.limit, bss=not args.no_bss,
                      progress=progress if bar is not None else None, bss_songs=args.bss_songs)  # fmt: skip
    if bar is not None:
        bar.close()
    report["model"] = sep.describe()
    print(f"{report['songs']} songs of {args.root}/{args.split}; {sep.describe()}")
    print(format_table(report, sep.sources))
    if args.against:
        from .evaluate import compare

        with open(args.against) as f:
            baseline = json.load(f)
        deltas = compare(report, baseline, sep.sources)
        print(f"MDX SDR change against {args.against} ({baseline.get('model', '?')}): " + ", ".join(
            f"{k} {d:+.3f} dB (songs up to {m:.3f})" for k, (d, m) in deltas.items()))  # fmt: skip
        report["against"] = {"report": args.against, "mdx_sdr_change": {k: d for k, (d, _) in deltas.items()}}
    if args.json:
        write_json(report, args.json)
    return 0


def _batch(args) -> int:
    from .batch import run_batch

    if args.workers is not None or args.scheduler is not None:
        require("distributed", "dask", "--workers / --scheduler")
    if args.report:
        require("matplotlib", "plot", "--report (spectrogram images)")
    options = {"weights": _weights(args), "backend": args.backend, "threads": args.threads, "mode": args.mode,
               "overlap": args.overlap, "trim": args.trim, "postfilter": args.postfilter,
               "iterations": args.iterations, "shifts": args.shifts}  # fmt: skip
    counts = run_batch(args.inputs, args.out, options, workers=args.workers, scheduler=args.scheduler, quiet=args.quiet)
    if args.report:
        from .report import write_report

        print(f"report: {write_report(args.out, bench_json=args.bench)}")
    return 1 if counts["failed"] or counts["not read"] else 0  # a folder not read is songs not separated


def _report(args) -> int:
    from .report import write_report

    require("matplotlib", "plot", "report (spectrogram images)")
    print(write_report(args.out, bench_json=args.bench))
    return 0


def require(module: str, extra: str, feature: str) -> None:
    """Refuse up front, in one line naming the extra to install, a feature whose library is missing."""
    if not module_available(module):
        raise LightsaftError(None, f"{feature} needs {module}: pip install 'lightsaft-infer[{extra}]'")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="LightSAFT music source separation on CPU.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    sub = parser.add_subparsers(dest="command", required=True)

    def model_options(p):
        p.add_argument("-w", "--weights", "-m", "--model", dest="weights", default=None,
                       help="weight file (.safetensors or .onnx) or a model name from 'lightsaft-infer models' (pulled "
                            "on first use); default: the default model, or $LIGHTSAFT_WEIGHTS")
        p.add_argument("--backend", default="auto", choices=("auto",) + BACKENDS,
                       help="onnx / torch: exact fp32; openvino-int8 / openvino-bf16 / torch-bf16: fast paths "
                            "(int8 / bfloat16, not exact); auto: onnx where the .onnx export exists")
        p.add_argument("--threads", type=int, default=None, help="CPU threads (default: the CPU quota granted)")
        p.add_argument("--mode", default="overlap", choices=MODES, help=AUTHORS_HELP)
        p.add_argument("--overlap", type=float, default=DEFAULT_OVERLAP, help="cross-faded fraction of each window (overlap mode)")
        p.add_argument("--trim", type=int, default=None,
                       help=f"samples of context dropped at each window edge (overlap mode; default {DEFAULT_TRIM})")
        p.add_argument("--postfilter", default="none", choices=POSTFILTERS,
                       help="make the stems agree with the mixture: consistency, softmask, or multichannel wiener "
                            "(norbert); none: the network's own output")
        p.add_argument("--iterations", type=int, default=1, help="EM iterations of the wiener post-filter")
        p.add_argument("--shifts", type=int, default=0,
                       help="augmented passes averaged with the plain one, as demucs' --shifts (sub-hop time "
                            "shifts, some with channel swap or sign flip: docs/augmentation.md); each costs one more pass")

    p = sub.add_parser("separate", help="separate audio files into stems")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("-o", "--out", default="separated", help="output folder: OUT/<song>/<stem>.<format>")
    model_options(p)
    p.add_argument("--batch-size", type=int, default=1, help="windows per network call")
    p.add_argument("--stems", nargs="+", choices=("vocals", "drums", "bass", "other"), help="only these stems")
    p.add_argument("--format", default="wav", choices=("wav", "flac"))
    p.add_argument("--subtype", default="FLOAT", choices=("FLOAT", "PCM_16", "PCM_24"), help="sample format of WAV output")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_separate)

    p = sub.add_parser("batch", help="separate every audio file under folders into a mirrored tree, resumably "
                                      "(on this machine, or on a Dask cluster)")
    p.add_argument("inputs", nargs="+", metavar="DIR_OR_FILE")
    p.add_argument("-o", "--out", required=True, help="OUT/<path without extension>/<stem>.wav, and OUT/manifest.jsonl")
    model_options(p)
    p.add_argument("--workers", type=int, default=None, help="run on a local Dask cluster of this many processes")
    p.add_argument("--scheduler", default=None, help="run on this Dask cluster (tcp://host:8786); OUT must be shared")
    p.add_argument("--report", action="store_true", help="also write OUT/index.html, a page to listen to the results")
    p.add_argument("--bench", default=None, help="with --report: a bench JSON whose plot the report shows")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_batch)

    p = sub.add_parser("report", help="write OUT/index.html for a batch: players, spectrograms, SDR, timings")
    p.add_argument("out", help="a batch's output folder (with manifest.jsonl)")
    p.add_argument("--bench", default=None, help="a bench JSON whose plot the report shows")
    p.set_defaults(func=_report)

    p = sub.add_parser("models", help="the authors' published networks: name, size, published SDR, cached or not")
    p.set_defaults(func=_models)

    p = sub.add_parser("pull", help="download an authors' network by name, verify it to the byte, convert and cache it")
    p.add_argument("names", nargs="+", metavar="NAME", help="names from 'lightsaft-infer models'")
    p.add_argument("--file", default=None, help="a checkpoint fetched by hand: verify and convert it (offline machines)")
    p.add_argument("--config", default=None, help="with --file, for LaSAFT-Net-v2-code networks: their config.yaml "
                                                  "(default: found beside the file, else downloaded)")
    p.add_argument("--mirror", default=None, help="a base URL serving <repository>/<commit>/<path> instead of the hosts")
    p.add_argument("--force", action="store_true", help="pull again even if the model is cached")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_pull)

    p = sub.add_parser("submission", help="write a ready MDX submission (2021 or MDX'23's music track) for a network "
                                          "and check it locally as the grader runs it")
    p.add_argument("-w", "--weights", "-m", "--model", dest="weights", default=None,
                   help="weight file or model name (default: the default model)")
    p.add_argument("--challenge", required=True, choices=("mdx21", "mdx23"))
    p.add_argument("-o", "--out", required=True, help="a new folder for the submission repository")
    p.add_argument("--songs", default=None, help="also check on these songs: DIR/<song>/mixture.wav (and stems for SDR)")
    p.add_argument("--no-check", action="store_true", help="write it without running it")
    p.set_defaults(func=_submission)

    p = sub.add_parser("convert", help="convert the authors' Lightning checkpoint (no pickled code is run)")
    p.add_argument("checkpoint")
    p.add_argument("-o", "--output", required=True, help="NAME.safetensors")
    p.add_argument("--onnx", action="store_true", help="also export NAME.onnx beside it")
    p.add_argument("--config", default=None,
                   help="LaSAFT-Net-v2-code checkpoints: the authors' config.yaml (default: NAME.config.yaml or config.yaml beside it)")
    p.set_defaults(func=_convert)

    p = sub.add_parser("export", help="export a weight file to ONNX for the onnx backend")
    p.add_argument("weights")
    p.add_argument("-o", "--output", default=None, help="default: the weights' name with .onnx")
    p.set_defaults(func=_export)

    p = sub.add_parser("info", help="print a weight file's model configuration")
    p.add_argument("weights")
    p.set_defaults(func=_info)

    p = sub.add_parser("bench", help="time whole-song separation against the MDX budgets")
    model_options(p)
    p.add_argument("--durations", type=float, nargs="+", default=[60.0, 240.0], help="song durations in seconds")
    p.add_argument("--backends", nargs="+", default=None, choices=BACKENDS,
                   help="paths to time; the first exact one (onnx/torch) is what the others are compared with "
                        "(default: onnx and the fast path predict.py would use)")
    p.add_argument("--no-reference", dest="reference", action="store_false", help="skip the authors' path")
    p.add_argument("--reference-max", type=float, default=240.0, help="skip the authors' path for longer songs")
    p.add_argument("--song", default=None, help="also a real song: a folder with mixture.wav and the four stems (SDR)")
    p.add_argument("--json", default=None, help="write the results as JSON here")
    p.add_argument("--plot", default=None, help="write a PNG of time against duration with the budget lines")
    p.add_argument("--roofline", action="store_true",
                   help="instead of songs: FLOPs per window and each path's fraction of this CPU's measured GEMM peak")
    p.set_defaults(func=_bench)

    p = sub.add_parser("evaluate", help="score a model on a MUSDB18-HQ-layout split against mix/4 and the IRM oracle")
    p.add_argument("root", help="folder with SPLIT/<song>/{mixture,vocals,drums,bass,other}.wav")
    p.add_argument("--split", default="test")
    model_options(p)
    p.add_argument("--limit", type=int, default=None, help="only the first N songs")
    p.add_argument("--no-bss", action="store_true", help="skip BSS-Eval v4 (museval; slow)")
    p.add_argument("--bss-songs", type=int, default=None, help="BSS-Eval on the first N songs only")
    p.add_argument("--json", default=None, help="write per-song scores and the summary as JSON here")
    p.add_argument("--against", default=None,
                   help="an earlier --json report of the same songs (e.g. the exact path's): print the change per stem")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=_evaluate)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM (docker stop, job schedulers): unwinds like Ctrl-C, so stems being written are deleted."""


def _terminate(signum, frame):
    raise Terminated


def _check_threads(args) -> None:
    """Refuse a nonsense ``--threads`` before any work, and say so when it is capped at what the CPU grants."""
    requested = getattr(args, "threads", None)
    if requested is None:
        return
    from .threads import cpu_threads, granted

    if cpu_threads(requested) < requested:
        _say(f"warning: --threads {requested} capped at the {granted()} CPU thread{'s' * (granted() != 1)} this process is granted")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
    try:
        _check_threads(args)
        return args.func(args)
    except (LightsaftError, ValueError) as err:
        if args.debug:
            raise
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 1
    except OSError as err:  # the file system's refusal (a name too long, a loop): the name and the reason
        if args.debug:
            raise
        name = os.fsdecode(err.filename) if err.filename is not None else ""
        name = name if len(name) <= 160 else f"{name[:80]}...{name[-60:]} ({len(name)} characters)"
        print(f"{PROG}: error: {name + ': ' if name else ''}{(err.strerror or str(err)).lower()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as err:
        note = getattr(args, "interrupted", "no partial stems were left")
        print(f"{PROG}: {'terminated' if isinstance(err, Terminated) else 'interrupted'}; {note}", file=sys.stderr)
        code = 143 if isinstance(err, Terminated) else 130
        from .signals import leave

        leave(code)  # a window still running beside us: end now, not after it
        return code


if __name__ == "__main__":
    sys.exit(main())
