"""espnet_delta: delta SSL embedding fusion, model merging, layer interfaces and SSHR for ESPnet."""
from setuptools import find_packages, setup

setup(
    name="espnet_delta",
    version="0.1.0",
    description="Delta SSL embedding fusion and related child-ASR methods as an ESPnet plugin",
    packages=find_packages(include=["espnet_delta", "espnet_delta.*"]),
    python_requires=">=3.11",
    install_requires=[
        "torch==2.9.1",
        "torchaudio==2.9.1",
        "espnet==202511",
        "espnet-s3prl",
        "sentencepiece",
        "kaldiio",
        "soundfile",
        "tqdm",
        "matplotlib",
        "tensorboard",
    ],
)
