from pathlib import Path

from setuptools import find_packages, setup

version = {}
exec(Path("anime_gan/__init__.py").read_text(), version)

setup(
    name="anime-gan",
    version=version["__version__"],
    description="Conditional GANs that draw 64x64 anime faces with the hair and eye colours you ask for",
    long_description=Path("README.md").read_text(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["anime_gan", "anime_gan.*"]),
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.4",
        "torchvision>=0.19",
        "numpy>=1.24",
        "pillow>=10.0",
        "matplotlib>=3.7",
        "tqdm>=4.60",
    ],
    extras_require={
        "test": ["pytest>=7", "hypothesis>=6.80"],
        "tensorboard": ["tensorboard>=2.12"],
    },
    entry_points={"console_scripts": ["anime-gan=anime_gan.cli:console"]},
)
