"""Label schemas and the condition vectors models consume.

A label is stored everywhere (tags.pickle, the packed cache, checkpoints) as one multi-hot vector
over all classes of the schema, groups concatenated in order: for the anime schema 12 hair + 10 eye
= 22 numbers with exactly one 1 per group.  `encode` turns that vector into the condition a model
is trained on (`onehot`, `pair` or `rgb`), so nothing downstream hard-codes 12, 10 or 22.
"""
from __future__ import annotations

import difflib
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .errors import UserError
from .files import write_text_atomically

# Seed 001's class order: the index of a class is its position here, in every file we read/write.
HAIR_COLORS = ("orange", "white", "aqua", "gray", "green", "red", "purple", "pink", "blue",
               "black", "brown", "blonde")
EYE_COLORS = ("black", "orange", "pink", "yellow", "aqua", "purple", "green", "brown", "red", "blue")

# Named colours for the `rgb` condition (seed 000's "rgb embed") and for the built-in dataset.
COLOR_RGB: dict[str, tuple[int, int, int]] = {
    "orange": (255, 140, 0), "white": (245, 245, 245), "aqua": (0, 210, 210),
    "gray": (128, 128, 128), "green": (30, 170, 60), "red": (220, 20, 30),
    "purple": (140, 50, 190), "pink": (255, 120, 180), "blue": (30, 70, 230),
    "black": (25, 25, 25), "brown": (120, 70, 30), "blonde": (250, 225, 110),
    "yellow": (250, 220, 0), "cyan": (0, 255, 255),
}

EMBEDS = ("onehot", "pair", "rgb")
SCHEMA_FILE = "schema.json"


def _did_you_mean(name: str, classes) -> str:
    """" (did you mean 'blue'?)" for a near miss such as 'blu' or 'bleu'; "" when nothing is close."""
    close = difflib.get_close_matches(name.lower(), [c.lower() for c in classes], n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


@dataclass(frozen=True)
class Group:
    """One attribute: one-of-N (hair colour) or multi-label (the objects in a CLEVR scene)."""
    name: str
    classes: tuple[str, ...]
    multi: bool = False
    # Words that follow a class name in human tags ("blue hair", "red eyes"); empty for
    # multi-label groups whose class names stand alone ("gray cube").
    suffixes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Schema:
    groups: tuple[Group, ...]
    offsets: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        starts = [0]
        for g in self.groups:
            starts.append(starts[-1] + len(g.classes))
        object.__setattr__(self, "offsets", tuple(starts))

    # ---- sizes -------------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return self.offsets[-1]

    @property
    def one_of_groups(self) -> tuple[Group, ...]:
        return tuple(g for g in self.groups if not g.multi)

    @property
    def class_sizes(self) -> tuple[int, ...]:
        """Sizes of the one-of-N groups, in order (the ACGAN heads)."""
        return tuple(len(g.classes) for g in self.one_of_groups)

    @property
    def multi_label(self) -> int:
        """Number of multi-label classes (0 for the anime schema)."""
        return sum(len(g.classes) for g in self.groups if g.multi)

    def group(self, name: str) -> Group:
        for g in self.groups:
            if g.name == name:
                return g
        raise UserError(f"this schema has no '{name}' attribute; it has: "
                        + ", ".join(g.name for g in self.groups))

    def span(self, name: str) -> slice:
        i = [g.name for g in self.groups].index(name)
        return slice(self.offsets[i], self.offsets[i + 1])

    # ---- json --------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"groups": [{"name": g.name, "classes": list(g.classes), "multi": g.multi,
                            "suffixes": list(g.suffixes)} for g in self.groups]}

    @classmethod
    def from_dict(cls, d: dict, source: str = "schema", fix: str = "re-run `anime-gan prepare`") -> "Schema":
        """`fix`: what to do about `source` when it is not a valid schema."""
        try:
            raw = d["groups"]
            if not isinstance(raw, list) or not all(isinstance(g, dict) for g in raw):
                raise TypeError("'groups' must be a list of objects")
            for g in raw:  # a string where a list belongs would be read letter by letter
                lists = (g["classes"], g.get("suffixes", []))
                if not (isinstance(g["name"], str) and isinstance(g.get("multi", False), bool)
                        and all(isinstance(v, list) and all(isinstance(x, str) for x in v) for v in lists)):
                    raise TypeError(f"group {g['name']!r}: the name must be text, classes and suffixes lists "
                                    f"of text, multi true or false")
            groups = tuple(Group(g["name"], tuple(g["classes"]), g.get("multi", False), tuple(g.get("suffixes", [])))
                           for g in raw)
        except (KeyError, TypeError) as e:
            raise UserError(f"{source}: not a valid label schema ({e}); {fix}") from None
        if not groups or any(not g.classes for g in groups):
            raise UserError(f"{source}: a label schema needs at least one group with classes; {fix}")
        # Group names become file names (<group>_prob.npy): plain, short and distinct.
        names = [g.name for g in groups]
        bad = next((n for n in names if not re.fullmatch(r"\w[\w .-]{0,31}", n) or names.count(n) > 1), None)
        if bad is not None:
            raise UserError(f"{source}: group name {bad!r} must be distinct, at most 32 letters, digits, "
                            f"spaces, '_', '-' or '.', and start with a letter or digit")
        for g in groups:  # `--hair Red` and the reports name classes as read: two that read alike are one
            seen = {}
            for c in g.classes:
                if not _words(c) or _words(c) in seen:
                    raise UserError(f"{source}: group {g.name!r} has class {c!r}"
                                    + (f" and {seen[_words(c)]!r}, which read the same" if _words(c) else "")
                                    + "; give every class a distinct, non-empty name")
                seen[_words(c)] = c
        taken = next((n for n in names if n in RESERVED_GROUP_NAMES), None)
        if taken is not None:  # eval's accuracy report keeps these keys beside one per group
            raise UserError(f"{source}: group name {taken!r} is reserved (eval reports "
                            f"{', '.join(sorted(RESERVED_GROUP_NAMES))}); rename the group")
        return cls(groups)

    def save(self, folder: Path) -> Path:
        path = Path(folder) / SCHEMA_FILE
        write_text_atomically(path, json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, folder: Path) -> "Schema":
        path = Path(folder) / SCHEMA_FILE
        fix = "fix the file or replace it with a good copy"  # a data set's own: prepare reads it, not writes it
        try:
            return cls.from_dict(json.loads(path.read_text(encoding="utf-8-sig")), str(path), fix)  # (a BOM)
        except (OSError, ValueError, RecursionError) as e:  # RecursionError: nested thousands deep
            raise UserError(f"{path}: cannot read the label schema ({e}); {fix}") from None

    # ---- human tags --------------------------------------------------------------------------
    def phrases(self) -> dict[tuple[str, ...], tuple[int, int]]:
        """Every accepted phrase (as a token tuple) -> (group index, class index): a class with one
        of its group's suffixes ("red hair"); in a group without suffixes, the class alone ("red
        cube") where no other group has that class, else with the group's name ("red eyes")."""
        out = {}
        ambiguous = self._ambiguous()
        for gi, g in enumerate(self.groups):
            for ci, c in enumerate(g.classes):
                words = _words(c)
                for s in g.suffixes or (g.name,):
                    out[words + _words(s)] = (gi, ci)
                if not g.suffixes and words not in ambiguous:
                    out[words] = (gi, ci)
        return out

    def _ambiguous(self) -> set[tuple[str, ...]]:
        """Class names that two groups without suffixes share (hair: red and eyes: red)."""
        bare = [_words(c) for g in self.groups if not g.suffixes for c in g.classes]
        return {w for w in bare if bare.count(w) > 1}

    def parse(self, text: str, require_all: bool = True) -> np.ndarray:
        """"blue hair red eyes" -> multi-hot float32 vector of size `dim`.

        With require_all=False a one-of group may be left out (its slice stays all zero)."""
        tokens = list(_words(text))
        phrases = self.phrases()
        longest = max(len(p) for p in phrases)
        vec = np.zeros(self.dim, np.float32)
        seen: dict[int, str] = {}
        i = 0
        while i < len(tokens):
            for k in range(min(longest, len(tokens) - i), 0, -1):
                hit = phrases.get(tuple(tokens[i:i + k]))
                if hit:
                    break
            else:
                raise UserError(self._unknown(tokens, i, text))
            gi, ci = hit
            g = self.groups[gi]
            if not g.multi and gi in seen:
                raise UserError(f"'{text}' names two {g.name} values ({seen[gi]} and {g.classes[ci]}); "
                                f"give one")
            seen[gi] = g.classes[ci]
            vec[self.offsets[gi] + ci] = 1.0
            i += k
        if require_all:  # a multi-label group may be empty: a scene of no objects
            missing = [g.name for gi, g in enumerate(self.groups) if gi not in seen and not g.multi]
            if missing:
                raise UserError(f"'{text}' does not say the {' or '.join(missing)}; "
                                f"write e.g. '{self.describe(self.example())}'")
        return vec

    def _unknown(self, tokens: list[str], i: int, text: str) -> str:
        # Name the group when the next word is its suffix ("teal hair"): the most common typo.
        for g in self.groups:
            if i + 1 < len(tokens) and tokens[i + 1] in g.suffixes:
                return (f"unknown {g.name} colour '{tokens[i]}' in '{text}'{_did_you_mean(tokens[i], g.classes)}; "
                        f"valid {g.name} colours: " + ", ".join(g.classes))
        shared = next((w for w in self._ambiguous() if tuple(tokens[i:i + len(w)]) == w), None)
        if shared is not None:
            named = [f"'{' '.join(shared)} {g.name}'" for g in self.groups
                     if not g.suffixes and shared in map(_words, g.classes)]
            return (f"'{' '.join(shared)}' in '{text}' is a class of several groups; "
                    f"write {' or '.join(named)}")
        valid = "; ".join(f"{g.name}: " + ", ".join(g.classes) for g in self.groups)
        return f"cannot read '{tokens[i]}' in '{text}'; valid names are {valid}"

    def class_index(self, group: str, name: str) -> int:
        g = self.group(group)
        if name in g.classes:
            return g.classes.index(name)
        folded = [c.lower() for c in g.classes]  # --hair Blue is --hair blue
        if folded.count(name.lower()) == 1:
            return folded.index(name.lower())
        raise UserError(f"unknown {group} colour '{name}'{_did_you_mean(name, g.classes)}; valid {group} colours: "
                        + ", ".join(g.classes))

    def describe(self, vec) -> str:
        """Multi-hot vector -> "blue hair red eyes" (inverse of parse)."""
        vec = np.asarray(vec)
        words, ambiguous = [], self._ambiguous()
        for gi, g in enumerate(self.groups):
            part = vec[self.offsets[gi]:self.offsets[gi + 1]]
            for ci in np.flatnonzero(part > 0.5):
                c = g.classes[ci]
                suffix = g.suffixes[:1] or ((g.name,) if _words(c) in ambiguous else ())
                words.append(" ".join((c,) + suffix))
        return " ".join(words)

    def example(self) -> np.ndarray:
        vec = np.zeros(self.dim, np.float32)
        for gi in range(len(self.groups)):
            vec[self.offsets[gi]] = 1.0
        return vec

    def check(self, vec: np.ndarray, where: str) -> None:
        """Refuse a label that is not exactly one class per one-of group (or is the wrong size)."""
        vec = np.asarray(vec)
        if vec.shape != (self.dim,):
            raise UserError(f"{where}: label has {vec.size} numbers but the schema has {self.dim} "
                            f"classes ({', '.join(f'{g.name}: {len(g.classes)}' for g in self.groups)}); "
                            f"labels of other groups need a schema.json beside the labels (see the README's "
                            f"data formats)")
        for gi, g in enumerate(self.groups):
            part = vec[self.offsets[gi]:self.offsets[gi + 1]]
            if not np.all((part == 0) | (part == 1)):
                raise UserError(f"{where}: {g.name} label must be 0/1 values, got {part.tolist()}")
            if not g.multi and part.sum() != 1:
                raise UserError(f"{where}: needs exactly one {g.name} class, got {int(part.sum())}")

    def combinations(self) -> list[np.ndarray]:
        """Every label with one class per one-of group (multi-label groups left empty)."""
        out = []
        for idx in itertools.product(*(range(len(g.classes)) for g in self.one_of_groups)):
            vec = np.zeros(self.dim, np.float32)
            one_of = [gi for gi, g in enumerate(self.groups) if not g.multi]
            for gi, ci in zip(one_of, idx):
                vec[self.offsets[gi] + ci] = 1.0
            out.append(vec)
        return out


def _words(text: str) -> tuple[str, ...]:
    """How a label phrase is read: case, commas and underscores aside ("Red_cube," is "red cube")."""
    return tuple(text.lower().replace(",", " ").replace("_", " ").split())


def anime_schema() -> Schema:
    return Schema((Group("hair", HAIR_COLORS, suffixes=("hair",)),
                   Group("eye", EYE_COLORS, suffixes=("eyes", "eye"))))


def multi_label_schema(classes: list[str], name: str = "objects") -> Schema:
    """Seed 003's CLEVR conditions: any subset of the named objects."""
    return Schema((Group(name, tuple(classes), multi=True),))


# ---- condition encodings -----------------------------------------------------------------------

RESERVED_GROUP_NAMES = frozenset({"joint", "worst", "conditions", "k", "label"})


def read_conditions(path, schema: Schema) -> tuple[list[list[str]], np.ndarray]:
    """Seed 003's test.json, for `test -t conditions` and `eval --conditions`: a JSON list of label
    lists ([["gray cube", "red sphere"], ["blue hair", "red eyes"]]; a bare string is a list of
    one) -> the entries and their multi-hot labels (n, dim). Entries are numbered from 1."""
    path = Path(path)
    try:
        entries = json.loads(path.read_text(encoding="utf-8-sig"))
    except OSError as e:
        raise UserError(f"--conditions {path}: cannot read ({e.strerror}); check the path") from None
    except (ValueError, RecursionError) as e:  # RecursionError: nested thousands deep
        raise UserError(f"{path}: not valid JSON ({e})") from None
    if isinstance(entries, list):
        entries = [[e] if isinstance(e, str) else e for e in entries]
    if not entries or not isinstance(entries, list) or not all(
            isinstance(e, list) and all(isinstance(t, str) for t in e) for e in entries):
        bad = next((i for i, e in enumerate(entries) if not isinstance(e, list)), None) \
            if isinstance(entries, list) else None
        where = f" (entry {bad + 1} is {json.dumps(entries[bad])})" if bad is not None else ""
        raise UserError(f"{path}: expected a non-empty JSON list of label lists{where}, e.g. "
                        f"{json.dumps([[schema.describe(schema.example())]])}")
    rows = []
    for i, entry in enumerate(entries):
        try:
            rows.append(schema.parse(", ".join(entry)))
        except UserError as e:
            raise UserError(f"{path} entry {i + 1} {json.dumps(entry)}: {e}") from None
        if not schema.one_of_groups:  # a multi-hot row: one label named twice would collapse to one
            named = sum(schema.parse(text) for text in entry if text.strip())
            if np.any(np.asarray(named) > 1):
                raise UserError(f"{path} entry {i + 1} {json.dumps(entry)}: names a label twice; give each once")
    return entries, np.stack(rows)


def cond_dim(schema: Schema, embed: str) -> int:
    if embed == "onehot":
        return schema.dim
    if embed == "pair":
        _require_one_of(schema, embed)
        return int(np.prod(schema.class_sizes))
    if embed == "rgb":
        _require_colours(schema)
        return 3 * len(schema.groups)
    raise UserError(f"unknown --embed '{embed}'; choose one of {', '.join(EMBEDS)}")


def _require_one_of(schema: Schema, embed: str) -> None:
    if schema.multi_label:
        raise UserError(f"--embed {embed} needs one-of-N attributes only, but this data set has "
                        f"multi-label classes; use --embed onehot")


def _require_colours(schema: Schema) -> None:
    _require_one_of(schema, "rgb")
    unknown = [c for g in schema.groups for c in g.classes if c not in COLOR_RGB]
    if unknown:
        raise UserError("--embed rgb needs every class to be a named colour; unknown: " + ", ".join(unknown))


def rgb_table(schema: Schema) -> torch.Tensor:
    """[dim, 3*groups] matrix: multi-hot label @ table = the RGB (0..1) of each group's colour."""
    _require_colours(schema)
    table = torch.zeros(schema.dim, 3 * len(schema.groups))
    for gi, g in enumerate(schema.groups):
        for ci, c in enumerate(g.classes):
            table[schema.offsets[gi] + ci, 3 * gi:3 * gi + 3] = torch.tensor(COLOR_RGB[c]) / 255.0
    return table


def encode(schema: Schema, labels: torch.Tensor, embed: str) -> torch.Tensor:
    """Multi-hot labels [B, dim] -> conditions [B, cond_dim(schema, embed)]."""
    if embed == "onehot":
        return labels
    if embed == "rgb":
        return labels @ rgb_table(schema).to(labels.device, labels.dtype)
    if embed == "pair":
        _require_one_of(schema, embed)
        index = torch.zeros(labels.shape[0], dtype=torch.long, device=labels.device)
        for gi, size in enumerate(schema.class_sizes):
            index = index * size + labels[:, schema.offsets[gi]:schema.offsets[gi + 1]].argmax(1)
        return torch.nn.functional.one_hot(index, cond_dim(schema, embed)).to(labels.dtype)
    raise UserError(f"unknown --embed '{embed}'; choose one of {', '.join(EMBEDS)}")


def condition_encoder(schema: Schema, embed: str, device):
    """`encode` for a training loop: the rgb table is built once, on `device`. Rebuilding it per step
    would copy it host->device every step, and a CUDA graph cannot record that copy."""
    if embed != "rgb":
        return lambda labels: encode(schema, labels, embed)
    table = rgb_table(schema).to(device)
    return lambda labels: labels @ table.to(labels.dtype)


def parse_rgb(text: str, flag: str = "") -> tuple[float, float, float]:
    """'#ff8800' or '255,136,0' -> (1.0, 0.53, 0.0); `flag` (say "--hair-rgb") is named in the error."""
    s = text.strip()
    try:
        # Digits only: int() alone would also take "+f", "-0" or "1_0"
        if re.fullmatch(r"#[0-9a-fA-F]{6}", s):
            rgb = tuple(int(s[i:i + 2], 16) for i in (1, 3, 5))
        else:
            parts = [v.strip() for v in s.split(",")]
            if len(parts) != 3 or not all(re.fullmatch(r"[0-9]{1,3}", v) for v in parts):
                raise ValueError
            rgb = tuple(int(v) for v in parts)
            if not all(v <= 255 for v in rgb):
                raise ValueError
    except ValueError:
        raise UserError(f"{flag + ': ' if flag else ''}cannot read colour '{text}'; write it as '#rrggbb' or "
                        f"'r,g,b' (0-255)") from None
    return tuple(v / 255.0 for v in rgb)
