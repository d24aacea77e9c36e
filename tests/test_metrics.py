"""Metrics: FID math and caching, the judge, attribute accuracy with label-blind and oracle
generators, Inception weights handling (never downloaded), and `eval` / `train-judge` on the CLI.

Everything runs on the CPU on 600 built-in faces; feature extractors are tiny random conv nets or
the judge, never downloaded weights."""
import errno
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from anime_gan import checkpoint
from anime_gan.cli import main
from anime_gan.config import TrainConfig
from anime_gan.data.dataset import open_packed
from anime_gan.data.synthetic import draw_face
from anime_gan.errors import UserError
from anime_gan.labels import multi_label_schema, read_conditions
from anime_gan.metrics import fid
from anime_gan.metrics.accuracy import attribute_accuracy
from anime_gan.metrics.config import JudgeConfig
from anime_gan.metrics.evaluate import evaluate, judge_key
from anime_gan.metrics.inception import WEIGHTS_FILE, InceptionFeatures
from anime_gan.metrics.judge import Judge, JudgeArch, group_hits, load_judge, save_judge, train_judge
from conftest import draw, one_line_error, snapshot


# Small enough for ~5 s on two CPU cores, and measured to reach >= 0.95 per group on 600 faces.
FAST_JUDGE = dict(epochs=15, width=16, batch_size=32, device="cpu", quiet=True)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These nets are too small to gain from a second thread, and on a busy machine two OpenMP
    threads spinning against other processes made this file 10x slower (133 s vs 12 s)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("metrics") / "data"
    assert main(["prepare", "--synthetic", "600", "-o", str(d), "-q"]) == 0
    return d


@pytest.fixture(scope="module")
def data(data_dir):
    return open_packed(data_dir, 64)


@pytest.fixture(scope="module")
def judge_file(data_dir):
    path, report = train_judge(JudgeConfig(train_dir=str(data_dir), **FAST_JUDGE), log=lambda m: None)
    return path, report


@pytest.fixture(scope="module")
def judge(judge_file):
    return load_judge(judge_file[0])[0]


@pytest.fixture(scope="module")
def run_dir(data_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    assert main(["train", "-t", str(data_dir), "--model", "cgan", "--nf", "8", "-i", "2", "-b", "8",
                 "--sample", "2", "--check", "2", "-d", "cpu", "-q",
                 "-c", str(root / "c"), "-s", str(root / "s")]) == 0
    (run,) = (root / "c").iterdir()
    return run


def random_extractor(seed=0):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, 2), nn.ReLU(), nn.Conv2d(8, 16, 3, 2), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    return lambda x: net(x)


# ---- FID ------------------------------------------------------------------------------------

def test_frechet_distance_matches_closed_form_for_diagonal_covariances():
    a = fid.Stats(np.array([0.0, 1.0]), np.diag([4.0, 1.0]), 10)
    b = fid.Stats(np.array([1.0, 1.0]), np.diag([1.0, 9.0]), 10)
    # |mu|^2 + sum (sqrt(a) - sqrt(b))^2 = 1 + (2-1)^2 + (1-3)^2
    assert fid.frechet_distance(a, b) == pytest.approx(6.0, abs=1e-9)


def test_fid_of_a_set_with_itself_is_zero_and_noise_is_far(data):
    ext = random_extractor()
    real = fid.extract(ext, data.images[:600])
    noise = fid.extract(ext, torch.rand(300, 3, 64, 64) * 2 - 1)
    s_all, s_a, s_b = fid.stats_of(real), fid.stats_of(real[::2]), fid.stats_of(real[1::2])
    to_noise = fid.frechet_distance(s_a, fid.stats_of(noise))
    assert fid.frechet_distance(s_all, s_all) <= 1e-3 * np.trace(s_all.cov)
    assert fid.frechet_distance(s_all, s_all) <= 1e-3 * to_noise
    assert to_noise > 10 * fid.frechet_distance(s_a, s_b)


def test_streaming_statistics_equal_one_shot(data):
    feats = fid.extract(random_extractor(), data.images[:200])
    acc = fid.StatsAccumulator()
    for part in feats.split(37):
        acc.add(part)
    s, ref = acc.stats(), np.cov(feats.double().numpy(), rowvar=False)
    assert s.n == 200 and np.allclose(s.cov, ref) and np.allclose(s.mean, feats.double().mean(0).numpy())


def test_real_statistics_per_class_stream_in_batches_and_match_one_shot(data, tmp_path):
    """Each batch's features go into the sums of its classes as they come (no N x F matrix is held):
    the result is the statistics of each class's rows, whatever the batch size."""
    ext = random_extractor()
    every = fid.extract(ext, data.images)
    hair = data.labels[:, data.schema.span("hair")].argmax(1)
    for batch in (7, 100):
        (data.root / "cache" / "fid_stream_64.npz").unlink(missing_ok=True)
        stats = fid.real_stats(data, ext, "stream", f"b{batch}", per_class=True, batch=batch)
        assert stats["all"].n == len(data) and np.allclose(stats["all"].cov, fid.stats_of(every).cov)
        for ci, c in enumerate(data.schema.group("hair").classes):
            rows = np.flatnonzero(hair == ci)
            if len(rows) >= 2:
                ref = fid.stats_of(every[torch.from_numpy(rows)])
                got = stats[f"hair/{c}"]
                assert got.n == len(rows) and np.allclose(got.mean, ref.mean) and np.allclose(got.cov, ref.cov)
            else:
                assert f"hair/{c}" not in stats


def test_real_statistics_are_cached_and_keyed(data):
    calls = []

    def ext(x):
        if len(x) > 1:  # (a cache read checks the feature count on one image)
            calls.append(len(x))
        return x.mean((2, 3))

    first = fid.real_stats(data, ext, "test", "k1", per_class=True)
    assert (data.root / "cache" / "fid_test_64.npz").exists() and sum(calls) == len(data)
    again = fid.real_stats(data, ext, "test", "k1", per_class=True)
    assert sum(calls) == len(data)  # served from the cache
    assert np.array_equal(first["all"].cov, again["all"].cov) and "hair/blonde" in again
    fid.real_stats(data, ext, "test", "k2", per_class=True)  # other weights: recomputed
    assert sum(calls) == 2 * len(data)
    cache = data.root / "cache" / "fid_test_64.npz"
    cache.write_bytes(cache.read_bytes()[:len(cache.read_bytes()) // 2])  # a truncated zip
    fid.real_stats(data, ext, "test", "k2", per_class=True)  # damaged: recomputed, not a traceback
    assert sum(calls) == 3 * len(data)
    cache.write_bytes(b"")  # e.g. a full disk: np.load raises EOFError
    fid.real_stats(data, ext, "test", "k2", per_class=True)
    assert sum(calls) == 4 * len(data)
    # a readable file with the right key but arrays no computation gives: computed again, not used
    # (a wrong shape made frechet_distance raise a traceback; NaN blamed the feature network)
    key = dict(np.load(cache))["key"]
    for bad in ({"all": fid.Stats(np.zeros(3), np.full((3, 3), np.nan), 9)},
                {"all": fid.Stats(np.zeros(3), np.zeros((2, 2)), 9)},
                {"all": fid.Stats(np.zeros(3), np.eye(3), 1)},
                {"hair/red": fid.Stats(np.zeros(3), np.eye(3), 9)}):
        fid._write(cache, str(key), bad)
        good = fid.real_stats(data, ext, "test", "k2", per_class=True)
        assert np.array_equal(good["all"].cov, first["all"].cov) and "hair/blonde" in good
    assert sum(calls) == 8 * len(data)
    # entries of another feature count than the extractor gives (consistent among themselves): the
    # FID's shapes would not match (a traceback); computed again
    fid._write(cache, str(key), {"all": fid.Stats(np.zeros(5), np.eye(5), 9)})
    assert fid.real_stats(data, ext, "test", "k2", per_class=True)["all"].cov.shape == (3, 3)
    fid._write(cache, str(key), {"all": fid.Stats(np.zeros(3), np.eye(3), 9),
                                 "hair/red": fid.Stats(np.zeros(5), np.eye(5), 9)})
    assert fid.real_stats(data, ext, "test", "k2", per_class=True)["hair/red"].cov.shape == (3, 3)
    assert sum(calls) == 10 * len(data)


def test_fid_against_a_single_real_image_is_one_line(tmp_path, cli, run_dir, monkeypatch):
    assert main(["prepare", "--synthetic", "1", "-o", str(tmp_path / "one"), "-q"]) == 0
    with pytest.raises(UserError, match=r"one: FID needs at least 2 real images, this data set has 1"):
        fid.real_stats(open_packed(tmp_path / "one", 64), lambda x: x.mean((2, 3)), "test", "k")
    # eval says so before it draws a single fake (at 10000 fakes through Inception, minutes), and
    # so does its dry run; so for a set of one picture repeated (found once images are read)
    from anime_gan.metrics import evaluate as ev
    monkeypatch.setattr(ev, "generate", lambda *a, **k: pytest.fail("fakes drawn before the data was checked"))
    for dry in ([], ["--dry-run"]):
        one_line_error(cli("eval", "-d", run_dir, "-t", tmp_path / "one", "--metrics", "judge-fid", "diversity",
                           "-q", *dry), f"{tmp_path / 'one'}: FID needs at least 2 real images, this data set has 1",
                       "or choose --metrics without judge-fid")
    for dry in ([], ["--dry-run"]):
        one_line_error(cli("train-judge", "-t", tmp_path / "one", "-q", *dry), f"{tmp_path / 'one'}: 1 image, all "
                       "held out to measure the judge; it needs at least 2")
    assert main(["prepare", "--synthetic", "3", "-o", str(tmp_path / "three"), "-q"]) == 0
    images = np.load(tmp_path / "three" / "cache" / "images_64.npy", mmap_mode="r+")
    images[:] = images[0]
    images.flush()
    del images
    assert main(["train-judge", "-t", str(tmp_path / "three"), "--width", "8", "--epochs", "1", "-b", "2", "-q",
                 "--heldout", "0.34"]) == 0
    rc, _, err = cli("eval", "-d", run_dir, "-t", tmp_path / "three", "--metrics", "judge-fid", "-q")
    assert rc == 2 and "Traceback" not in err and err.splitlines()[-1].startswith(  # (after the weak-judge note)
        f"anime-gan eval: error: {tmp_path / 'three'}: its 3 images are all the same picture"), err


def test_features_small_in_size_but_varied_are_not_called_the_same(data):
    """The spread check is relative: weights whose features are all about 1e-8 but differ by a few
    per cent were refused with "every real image gets the same features", which was false."""
    small = fid.Stats(np.full(8, 1e-8), np.eye(8) * (2e-10) ** 2, 600)
    fid._check_spread(small, data)  # no error
    for flat in (fid.Stats(np.zeros(8), np.zeros((8, 8)), 600), fid.Stats(np.ones(8), np.eye(8) * 1e-20, 600)):
        with pytest.raises(fid.BadFeatures, match="gets the same features"):
            fid._check_spread(flat, data)


# ---- judge ------------------------------------------------------------------------------------

def test_judge_reaches_high_heldout_accuracy(judge_file):
    path, report = judge_file
    assert report["heldout"] == 60 and report["train"] == 540
    assert all(acc >= 0.9 for acc in report["heldout_accuracy"].values()), report
    saved = checkpoint.load(path, "judge")  # weights-only, self-describing
    from anime_gan.metrics.judge import data_key
    assert report["data_key"] == data_key(open_packed(report["data"], 64))  # which data set it learnt
    assert saved["heldout_accuracy"] == report["heldout_accuracy"] and saved["image_size"] == 64


def test_seed_003_multi_label_score():
    schema = multi_label_schema(["a", "b", "c", "d"])
    logits = torch.tensor([[5.0, 4.0, 0.0, 0.0],    # asks a+b: top-2 = a, b -> 2 of 2
                           [5.0, 0.0, 4.0, 0.0],    # asks a+b: top-2 = a, c -> 1 of 2
                           [0.0, 0.0, 0.0, 9.0]])   # asks c:   top-1 = d    -> 0 of 1
    labels = torch.tensor([[1.0, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0]])
    hits, asked = group_hits(schema, logits, labels)["objects"]
    assert hits.tolist() == [2, 1, 0] and asked.tolist() == [2, 2, 1]
    out = attribute_accuracy(schema, logits, labels, k=1)
    assert out["objects"] == pytest.approx(3 / 5, abs=1e-4) and out["joint"] == pytest.approx(1 / 3, abs=1e-4)
    # an empty scene asks nothing and misses nothing: right in its group as in the joint score
    empty = attribute_accuracy(schema, logits[:1], torch.zeros(1, 4), k=1)
    assert empty["objects"] == 1.0 and empty["joint"] == 1.0 and empty["worst"][0]["objects"] == 1.0


def test_ties_among_the_worst_conditions_are_broken_by_the_groups_and_counted():
    # a judge that sees hair 0 and eye 0 in every fake: 119 of the 120 pairs score joint 0; the
    # worst shown are those where neither group is right, not the first five in order
    from anime_gan.labels import anime_schema
    schema = anime_schema()
    conditions = torch.from_numpy(np.stack(schema.combinations())).float()
    logits = torch.zeros(len(conditions), schema.dim)
    logits[:, schema.span("hair").start] = logits[:, schema.span("eye").start] = 5.0
    out = attribute_accuracy(schema, logits, conditions, k=1)
    assert out["worst_ties"] == 119 and len(out["worst"]) == 5
    assert all(w["joint"] == w["hair"] == w["eye"] == 0.0 for w in out["worst"]), out["worst"]


def test_multi_label_conditions_are_distinct_real_sets():
    from anime_gan.metrics.accuracy import default_conditions
    schema = multi_label_schema(["a", "b", "c"])
    real = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 1], [1, 0, 0], [0, 0, 1]] * 50, np.float32)
    conds = default_conditions(schema, real, torch.Generator().manual_seed(0))
    assert sorted(map(tuple, conds.tolist())) == [(0, 0, 1), (0, 1, 1), (1, 0, 0)]


def test_read_conditions(tmp_path):
    schema = multi_label_schema(["gray cube", "red sphere"])
    f = tmp_path / "c.json"
    f.write_text(json.dumps([["gray cube"], ["gray cube", "red sphere"]]))
    assert read_conditions(f, schema)[1].tolist() == [[1, 0], [1, 1]]
    f.write_text(json.dumps(["red sphere", ["gray cube"]]))  # a bare string is a list of one, as in `test`
    assert read_conditions(f, schema)[1].tolist() == [[0, 1], [1, 0]]
    f.write_text(json.dumps([["gray cube"], ["blue cone"]]))
    with pytest.raises(UserError, match=r'entry 2 \["blue cone"\]'):  # numbered from 1, as in `test`
        read_conditions(f, schema)
    f.write_text("[" * 100000 + "]" * 100000)  # too deep for Python's JSON reader (RecursionError)
    with pytest.raises(UserError, match="c.json: not valid JSON"):
        read_conditions(f, schema)


# ---- attribute accuracy with known generators --------------------------------------------------

class LabelBlind(nn.Module):
    """Returns random real images whatever c asks for."""
    z_dim = 4

    def __init__(self, images):
        super().__init__()
        self.images = torch.from_numpy(np.asarray(images)).float() / 127.5 - 1

    def forward(self, z, c):
        return self.images[(z[:, 0].abs() * 1e6).long() % len(self.images)]


class Oracle(nn.Module):
    """Draws a new built-in face with exactly the requested colours."""
    z_dim = 4

    def __init__(self, schema):
        super().__init__()
        self.schema = schema

    def forward(self, z, c):
        out = []
        for zi, ci in zip(z, c):
            hair, eye = (g.classes[int(ci[self.schema.span(g.name)].argmax())] for g in self.schema.groups)
            rng = np.random.default_rng(int(zi[0].abs() * 1e6))
            out.append(torch.from_numpy(np.array(draw_face(hair, eye, rng, 64))).permute(2, 0, 1))
        return torch.stack(out).float() / 127.5 - 1


def _score(G, judge, data):
    return evaluate(G, TrainConfig(model="cgan", embed="onehot"), data.schema, judge, data, k=2,
                    device="cpu", generator=torch.Generator().manual_seed(0), fid_samples=300, min_class=15)


def test_label_blind_generator_scores_near_chance_and_oracle_high(judge, data):
    blind, oracle = _score(LabelBlind(data.images), judge, data), _score(Oracle(data.schema), judge, data)
    assert blind["accuracy"]["hair"] < 0.3 and blind["accuracy"]["eye"] < 0.3
    assert blind["accuracy"]["conditions"] == 120 and len(blind["accuracy"]["worst"]) == 5
    assert oracle["accuracy"]["hair"] >= 0.9 and oracle["accuracy"]["eye"] >= 0.9
    assert oracle["accuracy"]["joint"] >= 0.8
    # Blind fakes of "blue hair" are faces of any colour: far from the real blue-haired faces.
    assert blind["intra_fid"]["mean"] > 2 * oracle["intra_fid"]["mean"]
    assert blind["judge_fid"] < blind["intra_fid"]["mean"]  # ... though as a whole they look real


class Collapsed(Oracle):
    """The oracle with its noise thrown away: one face per label, whatever z is."""
    def forward(self, z, c):
        return super().forward(torch.zeros_like(z), c)


def test_diversity_is_near_one_for_the_oracle_and_zero_when_z_is_ignored(data):
    def diversity(G):
        return evaluate(G, TrainConfig(model="cgan", embed="onehot"), data.schema, None, data, k=1,
                        device="cpu", generator=torch.Generator().manual_seed(0),
                        metrics=("diversity",))["diversity"]
    oracle, collapsed = diversity(Oracle(data.schema)), diversity(Collapsed(data.schema))
    assert oracle["pairs"] == collapsed["pairs"] == 500 and oracle["real"] == collapsed["real"] > 0.1
    assert 0.8 < oracle["ratio"] < 1.25   # new faces of a label vary as much as the data's faces do
    assert collapsed["fake"] == 0 and collapsed["ratio"] == 0
    blind = diversity(LabelBlind(data.images))   # random real faces, any label: more varied than one label
    assert blind["ratio"] > oracle["ratio"]
    # the same number whether or not other metrics drew from the generator first
    used = torch.Generator().manual_seed(0)
    torch.rand(1000, generator=used)
    again = evaluate(Oracle(data.schema), TrainConfig(model="cgan", embed="onehot"), data.schema, None, data,
                     k=1, device="cpu", generator=used, metrics=("diversity",))["diversity"]
    assert again == oracle


# ---- Inception (no downloads) -------------------------------------------------------------------

def test_inception_features_from_a_local_file(tmp_path):
    from torchvision.models import inception_v3
    path = tmp_path / WEIGHTS_FILE
    torch.save(inception_v3(weights=None, aux_logits=True, init_weights=False).state_dict(), path)
    assert InceptionFeatures(path)(torch.zeros(2, 3, 64, 64)).shape == (2, 2048)
    from anime_gan.metrics.inception import load_inception
    # the whole sha256, which metrics.jsonl records: comparable with a published checksum
    assert load_inception(str(path), "cpu")[1] == hashlib.sha256(path.read_bytes()).hexdigest()
    torch.save({"not": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(UserError, match="not torchvision's Inception-v3"):
        InceptionFeatures(tmp_path / "other.pth")
    # another network's weights (a judge, say): counted and named whole, not cut off mid-name
    state = torch.load(path, weights_only=True)
    torch.save({**{k: v for k, v in state.items() if not k.startswith("Mixed_7c")}, "head.weight": torch.zeros(1)},
               tmp_path / "judge.pth")
    with pytest.raises(UserError, match=r"judge\.pth: not torchvision's Inception-v3 weights \(it lacks \d+ of the "
                                        r"\d+ tensors Inception-v3 has, such as Mixed_7c\.[\w.]+\); replace it with https://"):
        InceptionFeatures(tmp_path / "judge.pth")
    torch.save({**state, "head.weight": torch.zeros(1)}, tmp_path / "extra.pth")
    with pytest.raises(UserError, match=r"it holds 1 tensor Inception-v3 has not, such as head\.weight\)"):
        InceptionFeatures(tmp_path / "extra.pth")
    shapes = {**state, "fc.bias": torch.zeros(3)}
    torch.save(shapes, tmp_path / "shapes.pth")
    with pytest.raises(UserError, match=r"shapes\.pth: not torchvision's Inception-v3 weights \(.*fc\.bias"):
        InceptionFeatures(tmp_path / "shapes.pth")
    (tmp_path / "cut.pth").write_bytes(path.read_bytes()[:4096])  # an interrupted download
    with pytest.raises(UserError, match=r"cut\.pth: corrupt or cut short .*; replace it with https://"):
        InceptionFeatures(tmp_path / "cut.pth")
    state = torch.load(path, weights_only=True)
    state["Mixed_7c.branch_pool.bn.running_var"].fill_(-1.0)  # finite, but every feature is NaN
    torch.save(state, tmp_path / "bad_bn.pth")
    with pytest.raises(UserError, match=r"bad_bn\.pth: these Inception weights compute NaN or infinite"):
        InceptionFeatures(tmp_path / "bad_bn.pth")
    torch.save({k: torch.zeros_like(v) for k, v in state.items()}, tmp_path / "zeroed.pth")
    with pytest.raises(UserError, match=r"zeroed\.pth: these Inception weights give two different images the same"):
        InceptionFeatures(tmp_path / "zeroed.pth")


def test_a_plain_pickle_as_inception_weights_is_refused_without_torch_warnings(tmp_path):
    import pickle
    import warnings
    (tmp_path / "plain.pt").write_bytes(pickle.dumps({"w": [1.0, 2.0]}))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with pytest.raises(UserError, match=r"plain\.pt: "):
            InceptionFeatures(tmp_path / "plain.pt")
    assert [str(w.message) for w in seen] == []


def test_missing_inception_weights_exit_2_naming_the_file(run_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    assert main(["eval", "-d", str(run_dir), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert WEIGHTS_FILE in err and str(tmp_path / "th" / "hub" / "checkpoints") in err
    assert len(err.strip().splitlines()) == 1
    assert main(["eval", "-d", str(run_dir), "--inception-weights", str(tmp_path / "x.pth")]) == 2
    assert "x.pth" in capsys.readouterr().err


# ---- CLI ----------------------------------------------------------------------------------------

def test_eval_json_prints_json_and_appends_metrics_line(run_dir, judge_file, capsys):
    args = ["eval", "-d", str(run_dir), "--metrics", "accuracy", "judge-fid", "intra-fid", "diversity", "-k", "1",
            "--fid-samples", "100", "--min-class", "5", "--device", "cpu", "-q"]
    assert main(args + ["--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["step"] == 2 and record["checkpoint"].endswith("G_2.ckpt")
    assert set(record["metrics"]) == {"accuracy", "judge_fid", "intra_fid", "diversity"}
    assert record["metrics"]["diversity"]["pairs"] == 500 and record["metrics"]["diversity"]["ratio"] >= 0
    assert 0 <= record["metrics"]["accuracy"]["hair"] <= 1
    assert main(args) == 0
    table = capsys.readouterr().out
    assert "attribute accuracy" in table and "diversity in z" in table
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[0])["metrics"] == record["metrics"]


def test_eval_shows_a_progress_bar_per_stage_and_none_with_q(run_dir, monkeypatch, capsys):
    from anime_gan.metrics import fid
    bars, real_tqdm = [], fid.tqdm

    def tqdm(*args, **kwargs):  # (tqdm draws only on a terminal, which tests have not)
        bars.append(kwargs["desc"])
        return real_tqdm(*args, **kwargs)
    monkeypatch.setattr(fid, "tqdm", tqdm)
    args = ["eval", "-d", str(run_dir), "--metrics", "accuracy", "judge-fid", "diversity", "-k", "1",
            "--fid-samples", "100", "--device", "cpu"]
    assert main([*args, "-q"]) == 0 and bars == []
    assert main(args) == 0
    assert bars == ["accuracy: fakes judged", "FID: fakes", "diversity: fakes"]  # real statistics: cached


def test_eval_from_another_folder_uses_the_data_the_run_was_trained_on(tmp_path, monkeypatch, capsys):
    """-t was relative ("data"); eval run elsewhere, next to another ./data, still scores the right set."""
    for where, n in (("a", 40), ("b", 24)):
        (tmp_path / where).mkdir()
        monkeypatch.chdir(tmp_path / where)
        assert main(["prepare", "--synthetic", str(n), "-o", "data", "--image-size", "32", "-q"]) == 0
    monkeypatch.chdir(tmp_path / "a")
    assert main(["train", "-t", "data", "--model", "cgan", "--nf", "8", "-b", "4", "-i", "1", "--image-size", "32",
                 "--name", "r", "-q"]) == 0
    monkeypatch.chdir(tmp_path / "b")
    images = tmp_path / "a" / "data" / "images"
    (images / "40.png").write_bytes((images / "0.png").read_bytes())  # the set changed after packing
    capsys.readouterr()
    assert main(["eval", "-d", str(tmp_path / "a" / "checkpoints" / "r"), "--metrics", "diversity", "-k", "1",
                 "--device", "cpu", "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["data"] == str(tmp_path / "a" / "data")
    assert f"note: {tmp_path / 'a' / 'data'} changed since its 32px cache was packed (images/: 40 -> 41 images); " \
           f"scores use the cache: run `anime-gan prepare {tmp_path / 'a' / 'data'} --image-size 32` to pack it " \
           f"again" in err  # (the size: without it, prepare packs the 64px cache and the note stays)


def test_eval_diversity_needs_no_judge(run_dir, tmp_path, capsys):
    missing = str(tmp_path / "none.pt")
    assert main(["eval", "-d", str(run_dir), "--judge", missing, "--metrics", "diversity", "--device", "cpu",
                 "--json"]) == 0
    out, err = capsys.readouterr()
    metrics = json.loads(out)["metrics"]
    assert set(metrics) == {"diversity"} and metrics["diversity"]["ratio"] >= 0
    # typed flags that the chosen metrics do not read are said, not dropped silently
    assert "note: --judge is read only by --metrics accuracy intra-fid judge-fid; without them" in err
    assert main(["eval", "-d", str(run_dir), "--inception-weights", missing, "--metrics", "diversity", "--device",
                 "cpu", "--json", "-k", "3", "--fid-samples", "50", "--min-class", "5"]) == 0
    err = capsys.readouterr().err
    assert "note: --inception-weights is read only by --metrics fid; without them, ignored" in err
    assert "note: -k is read only by --metrics accuracy; without them, ignored" in err
    assert "note: --fid-samples is read only by --metrics fid intra-fid judge-fid" in err
    assert "note: --min-class is read only by --metrics intra-fid" in err
    assert main(["eval", "-d", str(run_dir), "--metrics", "diversity", "-k", "3", "--dry-run"]) == 0
    assert "note: -k is read only by --metrics accuracy; without them, ignored" in capsys.readouterr().err


def test_eval_conditions_and_data_folder_mistakes_are_said_plainly(cli, run_dir, data_dir, tmp_path):
    conditions = tmp_path / "c.json"
    conditions.write_text(json.dumps([["blue hair", "red eyes"]]))
    rc, _, err = cli("eval", "-d", run_dir, "--metrics", "diversity", "--conditions", conditions, "--device", "cpu")
    assert rc == 0 and "note: --conditions is read only by --metrics accuracy; without them, ignored" in err
    one_line_error(cli("eval", "-d", run_dir, "--metrics", "diversity", "-t", tmp_path / "nope"),
                   tmp_path / "nope", "no such data folder; check -t")
    one_line_error(cli("eval", "-d", run_dir, "--metrics", "diversity", "-t", conditions),
                   f"{conditions}: is a file; -t takes the data folder that holds it ({tmp_path})")
    # a model without labels: --conditions is a mistake, said in one line
    unlabelled = tmp_path / "unlabelled"
    unlabelled.mkdir()
    for i in range(8):
        draw(unlabelled / f"{i}.png", (40 * i, 90, 200), size=(64, 64))
    assert main(["prepare", str(unlabelled), "-o", str(tmp_path / "u"), "-q"]) == 0
    assert main(["train", "-t", str(tmp_path / "u"), "--model", "dcgan", "--nf", "8", "-i", "1", "-b", "4", "-d",
                 "cpu", "-q", "-c", str(tmp_path / "c"), "-s", str(tmp_path / "s"), "--name", "u"]) == 0
    one_line_error(cli("eval", "-d", tmp_path / "c" / "u", "--metrics", "diversity", "--conditions", conditions),
                   "has no labels, so --conditions has nothing to choose")
    for dry_run in ([], ["--dry-run"]):  # the dry run reads the data folder's labels too
        one_line_error(cli("eval", "-d", run_dir, "--metrics", "diversity", "-t", tmp_path / "u", *dry_run),
                       f"{tmp_path / 'u'} has other labels than", "pass the right folder with -t")


def test_diversity_of_a_data_set_without_spread_is_not_a_number(data, tmp_path):
    """Every face of a label is one image: the ratio has no denominator and says so."""
    import dataclasses
    same = dataclasses.replace(data, images=np.broadcast_to(data.images[:1], data.images.shape))
    d = evaluate(Oracle(data.schema), TrainConfig(model="cgan", embed="onehot"), data.schema, None, same, k=1,
                 device="cpu", generator=torch.Generator().manual_seed(0), metrics=("diversity",))["diversity"]
    assert d["real"] == 0 and d["ratio"] is None


def test_eval_needs_a_judge_of_the_same_labels(run_dir, data_dir, judge_file, tmp_path, capsys):
    missing = str(tmp_path / "none.pt")
    assert main(["eval", "-d", str(run_dir), "--judge", missing, "--metrics", "accuracy"]) == 2
    err = capsys.readouterr().err
    assert f"--judge {missing}: no such file; check the path" in err and "train-judge" in err
    other = tmp_path / "other_judge.pt"
    save_judge(Judge(multi_label_schema(["a", "b"]), JudgeArch()), other, {"heldout_accuracy": {"objects": 0.9}})
    assert main(["eval", "-d", str(run_dir), "--judge", str(other), "--metrics", "accuracy"]) == 2
    err = capsys.readouterr().err
    assert str(other) in err and "G_2.ckpt" in err


def test_dry_runs_print_configs(capsys, run_dir, data_dir, judge_file):
    assert main(["train-judge", "--dry-run", "-t", str(data_dir), "--epochs", "3"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["epochs"] == 3 and cfg["resolved"] == {"out": str(data_dir / "judge_64.pt")}
    assert main(["eval", "--dry-run", "-d", str(run_dir), "--metrics", "diversity", "-k", "4"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["model_dir"] == str(run_dir) and cfg["metrics"] == ["diversity"] and cfg["k"] == 4
    # what the flags left to defaults resolve to: the files the real run reads
    latest = max(run_dir.glob("G_*.ckpt"), key=lambda p: int(p.stem[2:]))
    assert cfg["resolved"] == {"checkpoint": str(latest), "step": int(latest.stem[2:]), "data": str(data_dir),
                               "judge": None, "inception_weights": None}
    assert main(["eval", "--dry-run", "-d", str(run_dir), "--metrics", "accuracy"]) == 0
    assert json.loads(capsys.readouterr().out)["resolved"]["judge"] == str(judge_file[0])


def test_dry_runs_refuse_what_the_real_commands_refuse(cli, run_dir, data_dir, tmp_path):
    """The paths too, not only the values: a missing run, judge or data folder is one line, exit 2."""
    before = snapshot(run_dir)
    empty = tmp_path / "empty"
    empty.mkdir()
    for dry_run in ([], ["--dry-run"]):
        one_line_error(cli("eval", "-d", tmp_path / "no-run", "--metrics", "diversity", *dry_run),
                       f"{tmp_path / 'no-run'}: no such run folder")
        one_line_error(cli("eval", "-d", run_dir, "--metrics", "accuracy", "--judge", tmp_path / "no.pt", *dry_run),
                       f"--judge {tmp_path / 'no.pt'}: no such file")
        one_line_error(cli("eval", "-d", run_dir, "--metrics", "diversity", "-t", tmp_path / "no-data", *dry_run),
                       f"{tmp_path / 'no-data'}: no such data folder")
        one_line_error(cli("eval", "-d", run_dir, "--metrics", "diversity", "-t", empty, *dry_run),
                       "no 64px cache", "anime-gan prepare")
        one_line_error(cli("eval", "-d", run_dir, "--metrics", "accuracy", "--judge", empty, *dry_run),
                       f"--judge {empty}: a folder, not a judge file")
        one_line_error(cli("eval", "-d", run_dir, "--metrics", "diversity", "--conditions", tmp_path / "no.json",
                           *dry_run), f"{tmp_path / 'no.json'}: cannot read")
        one_line_error(cli("train-judge", "-t", tmp_path / "no-data", *dry_run), f"{tmp_path / 'no-data'}: no such")
        one_line_error(cli("train-judge", "-t", data_dir, "-o", run_dir / "G_2.ckpt", *dry_run),
                       "G_2.ckpt: exists and is not a judge")
        one_line_error(cli("train-judge", "-t", data_dir, "-o", run_dir, "--epochs", "1", *dry_run),
                       f"{run_dir}: is a folder; -o takes the judge's file name")
    assert list(tmp_path.iterdir()) == [empty] and list(empty.iterdir()) == [] and snapshot(run_dir) == before


def test_train_judge_dry_run_refuses_unlabelled_data(cli, tmp_path):
    from conftest import write_folder
    plain = write_folder(tmp_path / "plain", 3)
    for dry_run in ([], ["--dry-run"]):
        one_line_error(cli("train-judge", "-t", plain, "--epochs", "1", "-q", *dry_run),
                       "has no labels, so a judge cannot be trained")


def test_train_judge_dry_run_checks_where_it_would_write(cli, data_dir, tmp_path):
    one_line_error(cli("train-judge", "-t", data_dir, "-o", tmp_path / "nodir" / "j.pt", "--dry-run"),
                   f"{tmp_path / 'nodir' / 'j.pt'}")


def test_dry_run_loads_the_judge_and_inception_weights_the_real_run_would(cli, run_dir, data_dir, judge_file,
                                                                           tmp_path):
    (tmp_path / "junk.pt").write_bytes(os.urandom(300))
    other = tmp_path / "other_labels.pt"
    j = torch.load(judge_file[0], weights_only=True)
    j["schema"]["groups"][0]["classes"][0] = "teal"  # same shapes, other labels
    torch.save(j, other)
    before = snapshot(run_dir)
    for dry_run in ([], ["--dry-run"]):
        one_line_error(cli("eval", "-d", run_dir, "-t", data_dir, "--metrics", "accuracy", "--judge",
                           tmp_path / "junk.pt", "--device", "cpu", *dry_run), "junk.pt: ")
        one_line_error(cli("eval", "-d", run_dir, "-t", data_dir, "--metrics", "accuracy", "--judge", other,
                           "--device", "cpu", *dry_run), "was trained on other labels")
        one_line_error(cli("eval", "-d", run_dir, "-t", data_dir, "--metrics", "fid", "--inception-weights",
                           tmp_path / "junk.pt", "--device", "cpu", *dry_run), "junk.pt: ")
    assert snapshot(run_dir) == before


def test_eval_scores_do_not_depend_on_the_batch_size(cli, run_copy, data_dir, judge_file):
    def scores(batch):
        rc, out, err = cli("eval", "-d", run_copy, "-t", data_dir, "--judge", judge_file[0], "--metrics",
                           "accuracy", "diversity", "judge-fid", "-k", "1", "--fid-samples", "100", "-b", batch,
                           "--device", "cpu", "--json", "-q")
        assert rc == 0, err
        return json.loads(out)
    a, b = scores(100), scores(7)
    fid_a, fid_b = a["metrics"].pop("judge_fid"), b["metrics"].pop("judge_fid")
    assert a["metrics"] == b["metrics"] and a["settings"]["min_class"] == 50
    # convolutions sum in another order for another batch size: float rounding, as the README says
    assert fid_a > 0 and abs(fid_a - fid_b) <= 1e-4 * fid_a
    assert a["judge_key"] == judge_key(load_judge(judge_file[0], "cpu")[0]) and a["inception_sha256"] is None
    assert a["judge_heldout_accuracy"] == judge_file[1]["heldout_accuracy"] and a["inception_standard"] is None


def test_eval_records_which_weights_scored(cli, data_dir, tmp_path, monkeypatch):
    """A run trained without EMA is scored with its only weights, and says so; Inception weights
    that are not torchvision's file get a note, and their hash goes in the record."""
    from anime_gan.metrics import evaluate as ev
    assert cli("train", "-t", data_dir, "--model", "cgan", "--nf", "8", "-i", "1", "-b", "4", "--no-ema",
               "-d", "cpu", "-q", "-c", tmp_path / "c", "-s", tmp_path / "s", "--name", "r")[0] == 0
    (tmp_path / "w.pth").write_bytes(b"stands in for the weights")
    monkeypatch.setattr(ev, "load_inception", lambda path, device: (random_extractor(), "0123456789abcdef"))
    rc, out, err = cli("eval", "-d", tmp_path / "c" / "r", "--metrics", "fid", "diversity", "-k", "1",
                       "--fid-samples", "20", "--inception-weights", tmp_path / "w.pth", "--device", "cpu", "--json")
    assert rc == 0, err
    record = json.loads(out)
    assert record["settings"]["ema"] is False and record["inception_sha256"] == "0123456789abcdef"
    assert record["judge_key"] is None and record["metrics"]["fid"] >= 0 and record["inception_standard"] is False
    assert f"note: {tmp_path / 'w.pth'} is not torchvision's {WEIGHTS_FILE}" in err
    # 20 fakes and 600 reals: a covariance of 2048 features from fewer samples is singular
    assert "note: Inception FID from 20 fakes and 600 real images, fewer than its 2048 features" in err


# ---- bad output paths and devices: one line, exit 2, before the slow work -----------------------

def read_only(monkeypatch, folder: Path) -> None:
    """Make `folder` act like a read-only disk for temp files, which every atomic write and every
    write probe make (tests run as root, where chmod stops nothing)."""
    real = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):
        if dir is not None and Path(dir).resolve().is_relative_to(folder.resolve()):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dir))
        return real(*args, dir=dir, **kwargs)
    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


@pytest.fixture
def run_copy(run_dir, tmp_path):
    """The trained generator in a run folder of its own, whose metrics.jsonl a test may break."""
    (tmp_path / "run").mkdir()
    shutil.copy(run_dir / "G_2.ckpt", tmp_path / "run")
    return tmp_path / "run"


@pytest.mark.parametrize("block", ["folder", "read-only", "lost after the check"])
def test_eval_refuses_a_results_file_it_cannot_append_before_evaluating(cli, run_copy, data_dir, monkeypatch,
                                                                        block):
    from anime_gan.metrics import evaluate as ev
    results = run_copy / "metrics.jsonl"
    if block == "folder":
        results.mkdir()
    elif block == "read-only":
        read_only(monkeypatch, run_copy)
    computed = []

    def fake_evaluate(*args, **kwargs):
        computed.append(1)
        if block == "lost after the check":  # e.g. another process put a folder there meanwhile
            results.mkdir()
        return {}
    monkeypatch.setattr(ev, "evaluate", fake_evaluate)
    one_line_error(cli("eval", "-d", run_copy, "-t", data_dir, "--metrics", "diversity", "--device", "cpu", "-q"),
                   results, "-d")
    assert computed == ([1] if block == "lost after the check" else [])
    assert results.is_dir() == (block != "read-only")


def test_eval_after_a_record_cut_short_keeps_its_own(cli, run_copy, data_dir):
    # a kill -9 mid-write left half a line: the next record must not be glued onto it and lost
    results = run_copy / "metrics.jsonl"
    results.write_text(json.dumps({"step": 1, "metrics": {}}) + "\n" + '{"step": 2, "metr')
    rc, out, _ = cli("eval", "-d", run_copy, "-t", data_dir, "--metrics", "diversity", "--device", "cpu", "--json",
                     "-q")
    assert rc == 0
    assert [r["step"] for r in checkpoint.read_jsonl(results)] == [1, json.loads(out)["step"]]


def test_eval_computes_real_statistics_when_the_data_cache_is_read_only(cli, run_copy, data_dir, judge_file,
                                                                        tmp_path, monkeypatch):
    data = tmp_path / "data"
    shutil.copytree(data_dir, data, ignore=shutil.ignore_patterns("fid_*"))
    read_only(monkeypatch, data)
    rc, out, err = cli("eval", "-d", run_copy, "-t", data, "--judge", judge_file[0], "--metrics", "judge-fid",
                       "--fid-samples", "50", "--device", "cpu", "--json", "-q")
    assert rc == 0 and err == "", err
    assert json.loads(out)["metrics"]["judge_fid"] >= 0 and not list(data.glob("cache/*fid*"))


@pytest.mark.parametrize("block", ["folder", "file above", "missing folder", "read-only"])
def test_train_judge_checks_its_output_before_training(cli, data_dir, tmp_path, block, monkeypatch):
    out = tmp_path / "j.pt"
    if block == "folder":
        out.mkdir()
        needles = ("is a folder",)
    elif block == "file above":
        (tmp_path / "afile").write_text("not a folder")
        out = tmp_path / "afile" / "j.pt"
        needles = (f"{tmp_path / 'afile'} is a file",)
    elif block == "missing folder":
        out = tmp_path / "none" / "j.pt"
        needles = ("does not exist",)
    else:
        read_only(monkeypatch, tmp_path)
        needles = (os.strerror(errno.EROFS),)
    # Not quiet: an epoch line on stderr would show that training ran before the check.
    one_line_error(cli("train-judge", "-t", data_dir, "--epochs", "1", "--width", "4", "-d", "cpu", "-o", out),
                   out, "-o", *needles)


def test_train_judge_writes_over_a_judge_only(cli, data_dir, run_dir, tmp_path):
    """-o at a checkpoint or a tags file is refused before training, the file untouched; an older
    judge is replaced with a note."""
    g = sorted(Path(run_dir).glob("G_*.ckpt"))[-1]
    for victim in (g, Path(data_dir) / "tags.pickle"):
        before = victim.read_bytes()
        one_line_error(cli("train-judge", "-t", data_dir, "--epochs", "1", "--width", "4", "-d", "cpu",
                           "-o", victim), victim, "is not a judge", "-o")
        assert victim.read_bytes() == before
    judge = tmp_path / "j.pt"
    for _ in range(2):
        rc, _, err = cli("train-judge", "-t", data_dir, "--epochs", "1", "--width", "4", "-d", "cpu", "-o", judge)
        assert rc == 0
    assert "holds a judge already; it will be replaced" in err


@pytest.mark.parametrize("dry_run", [[], ["--dry-run"]])
@pytest.mark.parametrize("flags, needle", [(["--device", "tpu"], "tpu"), (["--device", "meta"], "meta"),
                                           (["--seed", "-1"], "--seed must be between"),
                                           (["--seed", str(10**20)], "--seed must be between"),
                                           (["-k", "100000000"], "-k 100000000 is more than 10,000"),
                                           (["-k", "0"], "-k must be at least 1, got 0"),
                                           (["--fid-samples", str(10**9)], "is more than 200,000")])
def test_unknown_device_bad_seed_or_huge_count_is_one_line(cli, run_dir, data_dir, tmp_path, flags, needle, dry_run):
    """Also with --dry-run, which checks values like a real run."""
    one_line_error(cli("eval", "-d", run_dir, "--metrics", "diversity", *flags, "-q", *dry_run), needle)
    if flags[0] in ("-k", "--fid-samples"):  # eval's own flags
        return
    one_line_error(cli("train-judge", "-t", data_dir, "--epochs", "1", *flags, "-o", tmp_path / "j.pt", "-q",
                       *dry_run), needle)
    assert not (tmp_path / "j.pt").exists()


@pytest.mark.parametrize("flags, needle", [(["--width", "100000"], "--width must be at most 512"),
                                           (["--features", "100000"], "--features must be at most 8192")])
def test_a_judge_too_wide_to_build_is_refused_before_training(cli, data_dir, tmp_path, flags, needle):
    one_line_error(cli("train-judge", "-t", data_dir, *flags, "-o", tmp_path / "j.pt", "-q"), needle)
    assert not (tmp_path / "j.pt").exists()


def test_non_finite_features_are_one_line_not_an_eigh_failure():
    with pytest.raises(UserError, match="NaN or infinite features"):
        fid.stats_of(torch.tensor([[float("nan"), 1.0], [0.0, 2.0], [1.0, 1.0]]))


def test_feature_networks_that_see_no_difference_are_refused_not_scored_zero(cli, run_dir, data_dir, judge_file,
                                                                          tmp_path, monkeypatch):
    """Zeroed (or otherwise collapsed) weights give every image the same features: every G would
    then score a FID of 0.000, a believable perfect score. eval names the file and writes nothing."""
    from anime_gan.metrics import evaluate as ev
    results = run_dir / "metrics.jsonl"
    before = results.read_bytes() if results.exists() else None
    (tmp_path / "w.pth").write_bytes(b"stands in for the weights")
    monkeypatch.setattr(ev, "load_inception", lambda path, device: (lambda x: torch.ones(len(x), 16), "0" * 16))
    rc, out, err = cli("eval", "-d", run_dir, "-t", data_dir, "--metrics", "fid", "--fid-samples", "20",
                       "--inception-weights", tmp_path / "w.pth", "--device", "cpu", "-q")
    assert rc == 2 and "Traceback" not in err  # (after the notes on the weights and the sample count)
    assert err.splitlines()[-1].startswith(f"anime-gan eval: error: {tmp_path / 'w.pth'}: these Inception weights "
                                           f"are unusable: every real image of {data_dir} gets the same features")
    assert "replace the file with https://" in err
    zeroed = torch.load(judge_file[0], weights_only=True)
    zeroed["state_dict"] = {k: torch.zeros_like(v) for k, v in zeroed["state_dict"].items()}
    torch.save(zeroed, tmp_path / "zero_judge.pt")
    for dry in ([], ["--dry-run"]):  # refused as it is loaded, so by the dry run too
        rc, out, err = cli("eval", "-d", run_dir, "-t", data_dir, "--judge", tmp_path / "zero_judge.pt",
                           "--metrics", "judge-fid", "--fid-samples", "20", "--device", "cpu", "-q", *dry)
        one_line_error((rc, out, err), f"{tmp_path / 'zero_judge.pt'}: the judge gives two different images the "
                                       f"same features", "retrain it with `anime-gan train-judge")
    assert (results.read_bytes() if results.exists() else None) == before


def test_real_statistics_without_spread_are_refused_from_the_cache_too(data_dir, tmp_path):
    """Statistics cached before the check existed are checked as they are read; a data set of one
    picture repeated is said to be that, not blamed on the network."""
    data = open_packed(data_dir, 64)
    size = data.images.shape[-1]
    st = (data_dir / "cache" / f"images_{size}.npy").stat()
    flat = fid.Stats(np.ones(16), np.zeros((16, 16)), len(data))  # (as many features as the extractor gives)
    fid._write(data_dir / "cache" / "fid_flat_64.npz", f"k|{st.st_size}|{st.st_mtime_ns}|all", {"all": flat})
    with pytest.raises(fid.BadFeatures, match="gets the same features"):
        fid.real_stats(data, random_extractor(), "flat", "k")
    (data_dir / "cache" / "fid_flat_64.npz").unlink()
    same = tmp_path / "same"
    shutil.copytree(data_dir, same, ignore=shutil.ignore_patterns("judge_*", "fid_*"))
    images = np.load(same / "cache" / "images_64.npy", mmap_mode="r+")
    images[:] = images[0]
    images.flush()
    del images
    with pytest.raises(UserError, match=r"its 600 images are all the same picture") as e:
        fid.real_stats(open_packed(same, 64), random_extractor(), "t", "k")
    assert not isinstance(e.value, fid.BadFeatures)


def test_judge_report_counts_its_epochs_in_english():
    from anime_gan.metrics.judge import format_report
    report = dict(judge="j.pt", heldout_accuracy={"hair": 0.5}, heldout=10, images=100, seconds=1.0, device="cpu")
    assert "1 epoch, " in format_report(dict(report, epochs=1))
    assert "3 epochs, " in format_report(dict(report, epochs=3))
    assert "note: below 0.8 this judge's scores" in format_report(dict(report, epochs=1))  # hair 0.5
    assert "note:" not in format_report(dict(report, epochs=1, heldout_accuracy={"hair": 0.95}, heldout=50))
    assert "note: 10 held-out images make its held-out accuracy a rough figure" in format_report(
        dict(report, epochs=1, heldout_accuracy={"hair": 0.95}))


def test_eval_says_when_its_judge_is_too_weak_to_trust(run_dir, judge_file, tmp_path, capsys):
    import shutil
    run = shutil.copytree(run_dir, tmp_path / "run")  # its own metrics.jsonl, not the shared run's
    args = ["eval", "-d", str(run), "--metrics", "accuracy", "-k", "1", "--device", "cpu"]
    assert main(args + ["--judge", str(judge_file[0])]) == 0
    assert "weak judge" not in capsys.readouterr().err  # the fixture's judge is a good one
    weak = torch.load(judge_file[0], weights_only=True)
    weak["heldout_accuracy"] = {**weak["heldout_accuracy"], "eye": 0.31}
    torch.save(weak, tmp_path / "weak.pt")
    assert main(args + ["--judge", str(tmp_path / "weak.pt")]) == 0
    assert f"note: {tmp_path / 'weak.pt'} is a weak judge (held-out accuracy on real images: eye 0.31" \
        in capsys.readouterr().err
    # -q silences progress, not what says how far the scores can be trusted; the record keeps it too
    assert main(args + ["--judge", str(tmp_path / "weak.pt"), "-q", "--json"]) == 0
    out, err = capsys.readouterr()
    assert "is a weak judge" in err and json.loads(out)["judge_heldout_accuracy"]["eye"] == 0.31
    # a perfect score on 5 held-out images vouches for nothing (--heldout 0.01 on a small set)
    lucky = torch.load(judge_file[0], weights_only=True)
    lucky["heldout_accuracy"] = {k: 1.0 for k in lucky["heldout_accuracy"]}
    lucky["report"] = {**lucky["report"], "heldout": 5}
    torch.save(lucky, tmp_path / "lucky.pt")
    assert main(args + ["--judge", str(tmp_path / "lucky.pt"), "-q"]) == 0
    assert (f"note: {tmp_path / 'lucky.pt'} was checked on 5 held-out images only, so its held-out accuracy is a "
            f"rough figure; retrain it on more images or with a larger --heldout") in capsys.readouterr().err
    # a judge that learnt from another data set (other labels) is said too
    other = torch.load(judge_file[0], weights_only=True)
    other["report"] = {**other["report"], "data": "elsewhere", "data_key": "0" * 16}
    torch.save(other, tmp_path / "other.pt")
    assert main(args + ["--judge", str(tmp_path / "other.pt"), "-q"]) == 0
    assert f"note: {tmp_path / 'other.pt'} was trained on another data set (elsewhere: other labels or image " \
           f"count) than" in capsys.readouterr().err


@pytest.mark.parametrize("value, needle", [(float("nan"), "its weights hold NaN or infinite values"),
                                           (3e38, "the generator draws NaN or infinite pixels")])  # overflows
def test_eval_of_a_diverged_generator_is_one_line_and_appends_nothing(cli, run_copy, data_dir, judge_file,
                                                                      value, needle):
    """Argmax over NaN would score class 0 as if drawn, eigh would crash, diversity would write NaN
    into the JSON log. Each metric refuses in one line instead."""
    g_path = run_copy / "G_2.ckpt"
    g = torch.load(g_path, weights_only=True)
    for weights in (g["G"], g["G_ema"] or {}):
        first = next(k for k, v in weights.items() if v.is_floating_point() and v.dim() > 1)
        weights[first].fill_(value)
    torch.save(g, g_path)
    for metric in ("accuracy", "judge-fid", "diversity"):
        one_line_error(cli("eval", "-d", run_copy, "-t", data_dir, "--judge", judge_file[0], "--metrics", metric,
                           "-k", "1", "--fid-samples", "50", "--device", "cpu", "-q"), needle)
    assert not (run_copy / "metrics.jsonl").exists() or not (run_copy / "metrics.jsonl").read_text()


@pytest.mark.parametrize("damage, needle", [
    (lambda j: j.pop("schema"), "damaged judge (no 'schema')"),
    (lambda j: j.pop("image_size"), "damaged judge (no 'image_size')"),
    (lambda j: j.update(heldout_accuracy=["high"]), "is not what a judge saves"),
    (lambda j: j.update(heldout_accuracy={"hair": float("nan")}), "is not what a judge saves"),
    (lambda j: j.update(heldout_accuracy={}), "is not what a judge saves"),
    (lambda j: next(v for v in j["state_dict"].values() if v.is_floating_point()).fill_(float("inf")),
     "weights hold NaN or infinite values"),
    (lambda j: j["state_dict"]["trunk.1.running_var"].fill_(-1.0), "damaged batch-norm statistics"),
    (lambda j: j["arch"].update(width=10 ** 6), "its architecture is not one train-judge makes"),
])
def test_a_damaged_judge_file_is_one_line(cli, run_dir, data_dir, judge_file, tmp_path, damage, needle):
    j = torch.load(judge_file[0], weights_only=True)
    damage(j)
    torch.save(j, tmp_path / "judge.pt")
    one_line_error(cli("eval", "-d", run_dir, "-t", data_dir, "--judge", tmp_path / "judge.pt",
                       "--metrics", "accuracy", "-k", "1", "--device", "cpu", "-q"), needle)


@pytest.mark.parametrize("flag", ["--fid-samples", "--min-class"])
def test_a_covariance_of_one_sample_is_refused_up_front(cli, run_dir, flag):
    one_line_error(cli("eval", "-d", run_dir, "--metrics", "intra-fid", flag, "1", "-q"), f"{flag} must be at least 2")


def test_fid_does_not_depend_on_which_other_metrics_ran(cli, run_dir, data_dir, judge_file):
    def judge_fid(*metrics):
        rc, out, err = cli("eval", "-d", run_dir, "-t", data_dir, "--judge", judge_file[0], "--metrics", *metrics,
                           "judge-fid", "-k", "1", "--fid-samples", "60", "--device", "cpu", "--json", "-q")
        assert rc == 0, err
        return json.loads(out)["metrics"]["judge_fid"]
    assert judge_fid() == judge_fid("accuracy") == judge_fid("accuracy", "diversity")


def test_eval_of_an_unconditional_model_refuses_label_scores(cli, data_dir, judge_file, run_dir, tmp_path):
    """dcgan ignores the labels of its (labelled) data: accuracy and intra-class FID would score
    labels it never saw, and diversity compares its fakes with any two real faces."""
    assert main(["train", "-t", str(data_dir), "--model", "dcgan", "--nf", "8", "-i", "1", "-b", "8", "-d", "cpu",
                 "-q", "--name", "u", "-c", str(tmp_path / "c"), "-s", str(tmp_path / "s")]) == 0
    run = tmp_path / "c" / "u"
    for metric in ("accuracy", "intra-fid"):
        one_line_error(cli("eval", "-d", run, "--judge", judge_file[0], "--metrics", metric, "--device", "cpu", "-q"),
                       f"--model dcgan draws without labels, so {metric} has nothing to score")
    rc, out, err = cli("eval", "-d", run, "--judge", judge_file[0], "--metrics", "judge-fid", "diversity",
                       "--fid-samples", "50", "--device", "cpu", "--json", "-q")
    assert rc == 0, err
    metrics = json.loads(out)["metrics"]
    assert metrics["judge_fid"] > 0 and metrics["diversity"]["pairs"] == 500
    # any two real faces differ more than two that share hair and eyes
    same_label = json.loads(cli("eval", "-d", run_dir, "--metrics", "diversity", "--device", "cpu",
                                "--json", "-q")[1])["metrics"]["diversity"]["real"]
    assert metrics["diversity"]["real"] > same_label


def test_fakes_are_scored_on_the_8_bit_grid_of_the_real_images(run_dir, data):
    from anime_gan.metrics.evaluate import generate
    G, tcfg, schema, _ = checkpoint.load_generator(run_dir / "G_2.ckpt", "cpu")
    labels = torch.from_numpy(data.labels[:10])
    (x,) = generate(G, tcfg, schema, labels, "cpu", torch.Generator().manual_seed(0), batch=10)
    levels = (x + 1) * 127.5
    assert x.shape == (10, 3, 64, 64) and torch.allclose(levels, levels.round(), atol=1e-4)
