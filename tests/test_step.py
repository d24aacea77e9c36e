"""One training step (step.py): inputs drawn apart from the compute, and `--cuda-graph`'s wrapper.

A CPU cannot record CUDA graphs, so the wrapper runs against stand-ins for the CUDA calls: its
warm-up, recording and replay bookkeeping; a stand-in graph with CUDA's semantics, which must
reproduce the plain run exactly; and the fallback when recording fails. Whether the real graph
records these models is checked on a GPU by bench/compare_runs.py."""
import contextlib

import pytest
import torch

from anime_gan import step as step_module
from anime_gan.cli import main
from anime_gan.data.dataset import Batches, LabelSampler, open_packed
from anime_gan.distributed import Dist
from anime_gan.labels import encode
from anime_gan.models import ModelConfig, aux_kind, build


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    root = tmp_path_factory.mktemp("step") / "data"
    assert main(["prepare", "--synthetic", "40", "-o", str(root), "--image-size", "32", "-q"]) == 0
    return open_packed(root, 32)


def _gan_step(packed, model, loss="bce", gp_weight=10.0):
    """A GanStep for `model` from seed 0, with its nets and optimizers."""
    schema = packed.schema
    torch.manual_seed(0)
    mcfg = ModelConfig(cond_dim=schema.dim, class_sizes=schema.class_sizes, nf=8, image_size=32)
    G, D = build(model, mcfg)
    opt_G = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_D = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    run_step = step_module.GanStep(G, D, G, D, opt_G, opt_D, torch.amp.GradScaler("cuda", enabled=False),
                                   Dist(), loss, aux_kind(model, mcfg), 1.0, mcfg.class_sizes,
                                   lambda y: encode(schema, y, "onehot"), contextlib.nullcontext(),
                                   gp_weight=gp_weight)
    return run_step, G, D, opt_G, opt_D


def _run(packed, model, steps, wrap=None):
    """`steps` iterations of `model` from seed 0; returns G's and D's final weights."""
    run_step, G, D, opt_G, opt_D = _gan_step(packed, model)
    if wrap is not None:
        run_step = wrap(run_step, (opt_G, opt_D))
    gen = torch.Generator().manual_seed(1)
    batches, labels = Batches(packed, 4, "cpu", gen), LabelSampler(packed, "cpu")
    names = []
    for _ in range(steps):
        out = run_step(step_module.draw(batches, labels, gen, 100, 1, channels_last=False))
        names.append([name for name, _ in out])
    return G.state_dict(), D.state_dict(), names


class _NoStream:
    """Stands in for torch.cuda's stream API on a CPU: every stream is the one stream there is."""
    def __init__(self, *a, **k): pass
    def wait_stream(self, other): pass


def _without_gpu_streams(monkeypatch, record):
    monkeypatch.setattr(torch.cuda, "Stream", _NoStream)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda *a: _NoStream())
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: None)
    monkeypatch.setattr(torch.cuda, "CUDAGraph", lambda: object())
    monkeypatch.setattr(torch.cuda, "graph", record)


@pytest.mark.parametrize("model", ["cgan", "acgan"])
def test_graph_wrapper_that_cannot_record_leaves_the_plain_trajectory(packed, monkeypatch, model):
    @contextlib.contextmanager
    def failing_record(graph):
        raise RuntimeError("operation not permitted when stream is capturing")
        yield

    _without_gpu_streams(monkeypatch, failing_record)
    messages = []
    wrap = lambda s, opts: step_module.CudaGraphStep(s, opts, messages.append)
    G_plain, D_plain, names_plain = _run(packed, model, 6)
    G_wrapped, D_wrapped, names_wrapped = _run(packed, model, 6, wrap)
    assert len(messages) == 1 and "--cuda-graph: this step cannot be recorded here (RuntimeError" in messages[0]
    assert names_plain == names_wrapped
    for plain, wrapped in ((G_plain, G_wrapped), (D_plain, D_wrapped)):
        assert all(torch.equal(plain[k], wrapped[k]) for k in plain), "the fallback changed the run"


def test_graph_wrapper_warms_up_then_records_once_and_replays(packed, monkeypatch):
    """Bookkeeping: 3 eager warm-up calls, one recording with static copies of the inputs, then
    each call copies its fresh inputs into those static tensors and replays."""
    recorded, replays = [], []

    class FakeGraph:
        def replay(self):
            replays.append([t.clone() for d in wrapper.static_in for t in d.tensors()])

    @contextlib.contextmanager
    def record(graph):
        recorded.append(graph)
        yield

    _without_gpu_streams(monkeypatch, record)
    monkeypatch.setattr(torch.cuda, "CUDAGraph", FakeGraph)
    wrapper = None

    def wrap(s, opts):
        nonlocal wrapper
        wrapper = step_module.CudaGraphStep(s, opts, lambda m: pytest.fail(m))
        return wrapper

    _run(packed, "cgan", 6, wrap)
    assert len(recorded) == 1 and wrapper.graph is recorded[0]
    # calls 1-3 warm up, call 4 records and replays, calls 5 and 6 replay: each with its own inputs
    assert len(replays) == 3
    assert not torch.equal(replays[0][0], replays[1][0]) and not torch.equal(replays[1][2], replays[2][2])
    assert wrapper.static_in[0].x.shape == (4, 3, 32, 32)


def test_graph_wrapper_replays_the_plain_trajectory(packed, monkeypatch):
    """A stand-in graph with CUDA's semantics: recording changes nothing (the state is put back),
    and replay runs the recorded step on the static inputs, writing into the same output tensors.
    The wrapped run must then follow the plain run exactly, which fails if any fresh input were
    not copied in, or if the recorded call were skipped or run twice."""
    import copy
    wrapper = None

    class RecordedGraph:
        def replay(self):
            for (_, static), (_, new) in zip(wrapper.static_out, wrapper.step(wrapper.static_in)):
                static.copy_(new)

    @contextlib.contextmanager
    def record(graph):
        s = wrapper.step
        saved = [copy.deepcopy(x.state_dict()) for x in (s.G, s.D, s.opt_G, s.opt_D)]
        yield
        for x, state in zip((s.G, s.D, s.opt_G, s.opt_D), saved):
            x.load_state_dict(state)

    _without_gpu_streams(monkeypatch, record)
    monkeypatch.setattr(torch.cuda, "CUDAGraph", RecordedGraph)

    def wrap(s, opts):
        nonlocal wrapper
        wrapper = step_module.CudaGraphStep(s, opts, lambda m: pytest.fail(m))
        return wrapper

    G_plain, D_plain, _ = _run(packed, "acgan", 7)
    G_graph, D_graph, _ = _run(packed, "acgan", 7, wrap)
    assert wrapper.graph is not None and wrapper.calls == 7
    for plain, graphed in ((G_plain, G_graph), (D_plain, D_graph)):
        assert all(torch.equal(plain[k], graphed[k]) for k in plain), "replay left the plain trajectory"


def test_paired_draws_repeat_the_fake_labels(packed):
    gen = torch.Generator().manual_seed(0)
    batches, labels = Batches(packed, 6, "cpu", gen), LabelSampler(packed, "cpu")
    (d,) = step_module.draw(batches, labels, gen, 100, 1, channels_last=False, paired=True)
    assert d.y_fake.shape == (6, packed.schema.dim) and torch.equal(d.y_fake[:3], d.y_fake[3:])
    assert not torch.equal(d.z[:3], d.z[3:])


def test_mode_seeking_term_falls_as_paired_fakes_move_apart():
    from anime_gan import losses
    z = torch.randn(8, 100)
    same = torch.zeros(8, 3, 4, 4)
    apart = torch.cat([torch.zeros(4, 3, 4, 4), torch.ones(4, 3, 4, 4)])
    assert losses.mode_seeking(same, z) > 1e4 > 10 > losses.mode_seeking(apart, z)
    fake = torch.zeros(8, 3, 4, 4, requires_grad=True)
    (grad,) = torch.autograd.grad(losses.mode_seeking(fake + 0.01 * torch.arange(8.).view(8, 1, 1, 1), z), fake)
    assert (grad[:4] > 0).all() and (grad[4:] < 0).all()  # descending it moves pair members apart


@pytest.mark.parametrize("loss", ["wgan-gp", "dragan"])
def test_gp_weight_scales_the_penalty(packed, loss):
    """--gp: D's loss is the adversarial loss plus WEIGHT x the penalty (seed 002 used 5)."""
    d_loss = {}
    for weight in (0.0, 5.0, 10.0):
        run_step, *_ = _gan_step(packed, "wgan-gp", loss, gp_weight=weight)
        gen = torch.Generator().manual_seed(1)
        draws = step_module.draw(Batches(packed, 4, "cpu", gen), LabelSampler(packed, "cpu"), gen, 100, 1, False)
        torch.manual_seed(5)  # the penalty's mixing weights
        d_loss[weight] = dict(run_step(draws))["d_loss"].item()
    assert d_loss[5.0] > d_loss[0.0]
    assert d_loss[10.0] - d_loss[0.0] == pytest.approx(2 * (d_loss[5.0] - d_loss[0.0]), rel=1e-4)
