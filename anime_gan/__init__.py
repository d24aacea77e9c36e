"""anime-gan: conditional GANs that draw 64x64 anime faces with the hair and eye colours you ask for."""

__version__ = "0.1.0"
