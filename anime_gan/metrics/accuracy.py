"""Attribute accuracy: did the generator draw what was asked, in the judge's opinion?

Which labels to ask for: every one-of combination (anime: 12 hair x 10 eye = 120), the label
lists of a --conditions file (seed 003's test.json), or, for multi-label schemas, random real
label sets.  Each is asked `k` times; scores come from the judge's logits on the fakes.
"""
from __future__ import annotations


import numpy as np
import torch

from ..errors import UserError
from ..labels import Schema
from .judge import accuracy, group_hits

MULTI_LABEL_CONDITIONS = 128  # random real object sets asked for when no --conditions file
WORST = 5


def default_conditions(schema: Schema, real_labels: np.ndarray | None,
                       generator: torch.Generator) -> torch.Tensor:
    """Every one-of combination; for multi-label schemas, up to 128 distinct real label sets instead."""
    if schema.multi_label:
        if real_labels is None or not len(real_labels):
            raise UserError("multi-label accuracy needs real labels or a --conditions file")
        # distinct sets: a repeat would count twice and could fill the worst list with one label
        distinct = np.unique(real_labels, axis=0)
        rows = torch.randperm(len(distinct), generator=generator, device=generator.device)
        return torch.from_numpy(distinct[rows[:MULTI_LABEL_CONDITIONS].cpu().numpy()]).float()
    return torch.from_numpy(np.stack(schema.combinations()))


def attribute_accuracy(schema: Schema, logits: torch.Tensor, conditions: torch.Tensor, k: int) -> dict:
    """Scores of the judge's `logits` (n*k, dim) for `conditions` (n, dim) asked k times each
    (rows grouped by condition): per group, joint (every group right), and the worst conditions."""
    labels = conditions.repeat_interleave(k, 0)
    hits = group_hits(schema, logits, labels)
    right = torch.stack([h == a for h, a in hits.values()]).all(0).float()  # (n*k,)
    out = dict(accuracy(hits))
    out["joint"] = round(right.mean().item(), 4)
    per_cond = right.view(len(conditions), k).mean(1)
    # nothing asked of a group (an empty scene) is nothing missed: 1, as the joint score counts it
    per_group = {name: torch.where(a.view(-1, k).sum(1) == 0, 1.0,
                                   h.view(-1, k).sum(1).float() / a.view(-1, k).sum(1).clamp(min=1))
                 for name, (h, a) in hits.items()}
    # ties (a collapsed G scores 0 everywhere) are broken by the per-group scores, then by order
    per_group_mean = torch.stack(list(per_group.values())).mean(0)
    worst = np.lexsort((per_group_mean.numpy(), per_cond.numpy()))[:WORST]
    out["worst"] = [{"label": schema.describe(conditions[i].numpy()),
                     "joint": round(per_cond[i].item(), 4),
                     **{name: round(v[i].item(), 4) for name, v in per_group.items()}}
                    for i in worst.tolist()]
    out["worst_ties"] = int((per_cond == per_cond.min()).sum())  # conditions at the lowest joint score
    out["conditions"], out["k"] = len(conditions), k
    return out
