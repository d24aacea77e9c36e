"""Inception-v3 pool features for FID, from a local weights file only.

Nothing here downloads: the model is built with `weights=None` and filled from torchvision's
`inception_v3_google-0cc3c7bd.pth`, found at --inception-weights or in torch.hub's checkpoint
cache.  Without the file, the error says which file to place where.

These are torchvision's port of the Google weights, not the TF-FID graph that published FID
numbers use, so our FID compares our runs with each other, not with papers.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from ..checkpoint import load_failure
from ..errors import UserError, detail
from .fid import file_key

WEIGHTS_FILE = "inception_v3_google-0cc3c7bd.pth"
INCEPTION_SHA256_PREFIX = "0cc3c7bd"  # torch.hub names files by the start of their sha256
WEIGHTS_URL = f"https://download.pytorch.org/models/{WEIGHTS_FILE}"
INCEPTION_DIM = 2048  # pool features, the FID feature


def default_weights_path() -> Path:
    """Where torchvision itself would cache the file: $TORCH_HOME/hub/checkpoints/."""
    return Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_FILE


def find_weights(path: str | None) -> Path:
    if path:
        p = Path(path)
        if not p.is_file():
            what = "a folder, not the weights file" if p.is_dir() else "no such file"
            raise UserError(f"--inception-weights {p}: {what}; download {WEIGHTS_URL} on a "
                            f"machine with internet and pass its path (or leave FID out with "
                            f"--metrics accuracy judge-fid intra-fid diversity)")
        return p
    p = default_weights_path()
    if not p.is_file():
        raise UserError(f"FID needs the Inception-v3 weights file {WEIGHTS_FILE}, not found in "
                        f"{p.parent}/ (nothing is downloaded here); copy it there from {WEIGHTS_URL}, "
                        f"or pass --inception-weights PATH, or leave FID out with "
                        f"--metrics accuracy judge-fid intra-fid diversity")
    return p


class InceptionFeatures(nn.Module):
    """images in [-1, 1] (B, 3, S, S) -> 2048-d pool features (B, 2048)."""

    def __init__(self, weights: Path):
        super().__init__()
        from torchvision.models import inception_v3
        # transform_input=False: our images are already in [-1, 1], the scaling these weights
        # were trained with (torchvision's transform_input maps ImageNet-normalised input there).
        net = inception_v3(weights=None, aux_logits=True, init_weights=False, transform_input=False)
        try:
            with warnings.catch_warnings():  # torch warns before it refuses; our line says enough
                warnings.simplefilter("ignore")
                state = torch.load(weights, map_location="cpu", weights_only=True)
        except Exception as e:  # a truncated download, or not a weights file at all
            raise UserError(f"{weights}: {load_failure(str(e))}; replace it with {WEIGHTS_URL}") from None
        needed = net.state_dict()
        missing = [k for k in needed if k not in state] if isinstance(state, dict) else list(needed)
        unknown = [k for k in state if k not in needed] if isinstance(state, dict) else []
        if missing or unknown:  # some other network's weights: counted, as torch's list runs to hundreds of names
            what = (f"it lacks {len(missing)} of the {len(needed)} tensors Inception-v3 has, such as {missing[0]}"
                    if missing else
                    f"it holds {len(unknown)} tensor{'s' * (len(unknown) != 1)} Inception-v3 has not, such as {unknown[0]}")
            raise UserError(f"{weights}: not torchvision's Inception-v3 weights ({what}); "
                            f"replace it with {WEIGHTS_URL}")
        try:
            net.load_state_dict(state)
        except Exception as e:  # the right names, other shapes
            raise UserError(f"{weights}: not torchvision's Inception-v3 weights ({detail(e)}); "
                            f"replace it with {WEIGHTS_URL}") from None
        net.fc = nn.Identity()  # keep the 2048-d average-pool output, the FID feature
        self.net = net.eval()
        with torch.no_grad():  # finite weights can still hold a negative running variance
            probe = self.net(torch.linspace(-1, 1, 2 * 3 * 299 * 299).view(2, 3, 299, 299))
        if not torch.isfinite(probe).all():
            raise UserError(f"{weights}: these Inception weights compute NaN or infinite features; "
                            f"replace the file with {WEIGHTS_URL}")
        if torch.equal(probe[0], probe[1]):  # e.g. zeroed weights: every G would score a FID of 0
            raise UserError(f"{weights}: these Inception weights give two different images the same "
                            f"features (zeroed or untrained), so FID would be 0 for any G; replace the "
                            f"file with {WEIGHTS_URL}")

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False, antialias=True)
        return self.net(x)


def load_inception(path: str | None, device) -> tuple[InceptionFeatures, str]:
    """(extractor on `device`, cache key): the key changes when the weights file does."""
    p = find_weights(path)
    return InceptionFeatures(p).to(device), file_key(p)  # by content: another file of that name and size too
