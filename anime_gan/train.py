"""`anime-gan train`: the training loop, read top to bottom.

setup (device, data, models, optimizers) -> init (scratch or resume) -> loop:
  draw the step's random inputs -> (1) update D (n_critic times)  (2) update G  [step.py]
  -> (3) EMA  (4) log / sample / checkpoint
Outputs follow seed 001's layout: samples/<run>/{real,fake_step_<N>}.png and
checkpoints/<run>/{G,D}_<N>.ckpt, loss.png, classifier_loss.png, config.json, stats.jsonl.
"""
from __future__ import annotations

import copy
import json
import math
import os
import shlex
import signal
import sys
import time
from contextlib import nullcontext, suppress
from dataclasses import asdict, fields, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from . import checkpoint, distributed, render
from .config import TrainConfig, resolve_hyper, validate_train
from .data.dataset import Batches, LabelSampler, open_packed
from .data.formats import scan
from .data.prepare import (PrepareConfig, cache_changes, cache_paths, ensure_cache, format_report, prepare,
                           preparing)
from .errors import Diverged, UserError, os_error_line, out_of_memory
from .files import append_line, removed_on_failure, visible_entries, writable_folder, write_text_atomically
from .labels import Schema, anime_schema, cond_dim, condition_encoder
from .metrics.evaluate import (evaluate_during_training, load_training_judge, training_metrics,
                               weak_judge_note)
from .metrics.fid import check_image_count, check_real_images
from .models import PRESETS, ModelConfig, aux_kind, build
from .step import CudaGraphStep, GanStep, VaeStep, draw as step_inputs, saved_bytes_per_image


# Under torchrun, steps between the ranks' agreement on a Ctrl-C/SIGTERM: the stop lands this late at most.
STOP_AGREEMENT_EVERY = 10

# What a resume does not take from its snapshot when left out: where this session runs and writes.
SESSION_SETTINGS = ("device", "name", "resume", "checkpoint_dir", "quiet", "typed", "precision",
                    "compile", "cuda_graph", "deterministic", "channels_last", "data_on_device", "sync_bn")


def check_data_folder(cfg: TrainConfig) -> None:
    """-t names a folder, or none at all only where it is the default (also run by --dry-run)."""
    root = Path(cfg.train_dir)
    if not root.exists() and root != Path(TrainConfig.train_dir):
        # a typo in -t must not quietly become hours of training on procedural faces
        raise UserError(f"{shlex.quote(str(root))}: no such data folder; check the path, or create it empty (mkdir) "
                        f"to have the built-in faces drawn there")
    if root.exists() and not root.is_dir():
        raise UserError(f"{root}: is a file; -t takes the data folder that holds it ({root.parent})")


def check_run_folder(cfg: TrainConfig, ckpt_dir: Path, resume_path: Path | None, snapshot: dict | None) -> bool:
    """The run folder takes this run without writing over another's steps (also run by --dry-run);
    True when the run starts it afresh rather than continuing in it."""
    if resume_path is None:  # a wrong -t first: the advice about the run folder would not help
        check_data_folder(cfg)
    if resume_path is not None:
        checkpoint.trainer_path(resume_path)  # first: no other advice helps without it
        if "sample_dir" not in (cfg.typed or ()):
            checkpoint.check_sample_folder(snapshot, resume_path.parent, Path(cfg.sample_dir) / ckpt_dir.name)
    # A run continued elsewhere (--resume OTHER_RUN) starts this folder afresh, like a new run.
    fresh_folder = resume_path is None or resume_path.parent.resolve() != ckpt_dir.resolve()
    if resume_path is not None and fresh_folder:  # a branch under another -c, keeping the run's name
        origin = resume_path.parent
        theirs = Path(snapshot.get("sample_path") or cfg.sample_dir) / origin.name
        if (Path(cfg.sample_dir) / ckpt_dir.name).resolve() == theirs.resolve():
            raise UserError(f"{ckpt_dir}: a branch of {origin} would write its images into {theirs}, among "
                            f"the original's; give it its own with --name NEW or -s FOLDER (nothing was changed)")
    existing = checkpoint.steps(ckpt_dir)  # any G_<N>.ckpt: a fresh start would write over it
    later = [s for s in existing if resume_path is not None and s > int(snapshot["step"])]
    if not fresh_folder and later:
        raise UserError(f"{ckpt_dir}: holds steps after {resume_path.name} (up to {later[-1]}), which resuming "
                        f"from it would write over; branch with --name NEW, or delete G_/D_ files after it "
                        f"(nothing was changed)")
    if resume_path is not None and not Path(cfg.train_dir).is_dir():
        raise UserError(f"{cfg.train_dir}: no such data folder; check -t" if "train_dir" in (cfg.typed or ()) else
                        f"{cfg.train_dir}: the data folder this run was trained on is not here; "
                        f"pass its new place with -t")
    if fresh_folder and existing:
        raise UserError(f"{ckpt_dir}: already holds a run (step {existing[-1]}); continue it with "
                        f"--resume latest, or pick another --name"
                        + (" for the run continued from --resume" if cfg.resume else "") + " (nothing was changed)")
    samples = Path(cfg.sample_dir) / ckpt_dir.name
    # A run folder with no steps is this run's own failed start (retried as its message says):
    # without one, grids there are another run's (under another -c, or whose folder was deleted).
    theirs = sorted(samples.glob("fake_step_*.png")) if fresh_folder and not ckpt_dir.exists() else []
    if theirs:
        raise UserError(f"{samples}: holds {len(theirs)} fake_step_<N>.png of an earlier run, which this new "
                        f"run's would be written over and among; give it its own with --name NEW or -s FOLDER, "
                        f"or delete that folder (nothing was changed)")
    return fresh_folder


def load_training_data(cfg: TrainConfig, log):
    """Open the packed cache; draw the built-in faces first when the data folder is empty (or is
    the default one and missing)."""
    root = Path(cfg.train_dir)
    if _current_cache(root, cfg.image_size):
        return open_packed(root, cfg.image_size)
    check_data_folder(cfg)
    # The lock first: a run stopped while it waits must not remove the folder another one draws into.
    with preparing(root, log):
        if _current_cache(root, cfg.image_size):  # made (or packed again) by the run we waited for
            return open_packed(root, cfg.image_size)
        changed = cache_changes(root, cfg.image_size)
        if changed:  # images added or removed, labels edited: training on the old cache would hide it
            log(f"{root} changed since its {cfg.image_size}px cache was packed ({changed}): packing it again")
            log(format_report(prepare(PrepareConfig(source=str(root), out=str(root), image_size=cfg.image_size,
                                                    quiet=cfg.quiet))))
            return open_packed(root, cfg.image_size)
        missing = not root.exists()
        with removed_on_failure(root):  # a Ctrl-C while drawing leaves no empty or half data folder
            writable_folder(root, "choose another folder with -t")  # the set or its cache is written there
            if not visible_entries(root):
                log(f"{root} {'does not exist' if missing else 'is empty'}: drawing the built-in data set "
                    f"({cfg.synthetic_size} procedural faces) there first")
                report = prepare(PrepareConfig(out=str(root), synthetic=cfg.synthetic_size,
                                               image_size=cfg.image_size, seed=0, quiet=cfg.quiet))
                log(format_report(report))
            else:
                log(f"{root} has no {cfg.image_size}px cache yet: packing it once")
                ensure_cache(root, cfg.image_size, quiet=cfg.quiet)
    return open_packed(root, cfg.image_size)


def _current_cache(root: Path, size: int) -> bool:
    return cache_paths(root, size)[0].exists() and not cache_changes(root, size)


def labels_ahead(cfg: TrainConfig) -> Schema | None:
    """The data folder's labels, without drawing or packing anything: read off its cache, its label
    files, or (an empty folder) those of the built-in faces it will get."""
    root = Path(cfg.train_dir)
    if _current_cache(root, cfg.image_size):
        return open_packed(root, cfg.image_size).schema
    if not visible_entries(root):
        return anime_schema()
    return scan(root).schema


def known_image_count(cfg: TrainConfig) -> int | None:
    """How many images training will see, where that is known without reading the folder: from a
    current cache's header, or the built-in faces an empty folder gets (None otherwise)."""
    root = Path(cfg.train_dir)
    if _current_cache(root, cfg.image_size):
        return len(open_packed(root, cfg.image_size))
    return cfg.synthetic_size if not visible_entries(root) else None


def check_before_data(cfg: TrainConfig, resume_path: Path | None, snapshot: dict | None,
                      log=lambda msg: None):
    """What the data's labels and the other inputs decide, checked before any slow work (drawing the
    built-in faces, packing a cache), which a refusal would waste; also run by `train --dry-run`.
    Returns --eval-every's judge (on the CPU) and its file's records, loaded and checked: (None,
    None) without it."""
    check_data_folder(cfg)
    with preparing(Path(cfg.train_dir), log):  # not a folder another run is drawing into right now
        labels = labels_ahead(cfg)
    if resume_path is not None:
        checkpoint.check_labels(resume_path, snapshot, labels.to_dict() if labels else None, cfg.train_dir)
    _model_config(cfg, PRESETS[cfg.model], labels)
    if cfg.eval_every:
        judge, judge_info = load_training_judge(cfg, labels, torch.device("cpu"))  # (a broken one refused)
        n = known_image_count(cfg)
        if n is not None:  # (so the dry run says it too; one picture repeated is found later)
            check_image_count(cfg.train_dir, n, "add images and run `anime-gan prepare` again, or drop --eval-every")
    else:
        judge, judge_info = None, None
    if cfg.tensorboard:
        _tensorboard_writer()
    return judge, judge_info


def fixed_grid(schema: Schema | None, z_dim: int, cols: int, seed: int):
    """Fixed z and labels for fake_step_<N>.png: one row per label, same noise in every row."""
    g = torch.Generator().manual_seed(seed + 12345)
    if schema is None:
        rows = [None] * cols
        labels = torch.zeros(cols * cols, 0)
    else:
        if schema.multi_label:
            multi = [i for gi, g in enumerate(schema.groups) if g.multi
                     for i in range(schema.offsets[gi], schema.offsets[gi + 1])]
            one_of = [gi for gi, g in enumerate(schema.groups) if not g.multi]
            vecs = []
            for i in range(8):  # four single objects, then four pairs: rows a person can check
                v = np.zeros(schema.dim, np.float32)
                for k, gi in enumerate(one_of):  # and one class of each one-of group, cycling
                    v[schema.offsets[gi] + (i + k) % len(schema.groups[gi].classes)] = 1
                v[multi[(5 * i) % len(multi)]] = 1
                if i >= 4:
                    v[multi[(5 * i + 3) % len(multi)]] = 1
                vecs.append(v)
        else:
            # Every hair colour once, eye colours cycling: all classes of the first two groups show.
            first = schema.one_of_groups[0]
            combos = schema.combinations()
            per = len(combos) // len(first.classes)
            vecs = [combos[i * per + (i % per)] for i in range(len(first.classes))]
        rows = [schema.describe(v) for v in vecs]
        labels = torch.from_numpy(np.stack(vecs)).float().repeat_interleave(cols, 0)
    # The first row's noise in every row, so that rows differ only in their label.
    z = torch.randn(len(rows) * cols, z_dim, generator=g)[:cols].repeat(len(rows), 1)
    return z, labels, rows


def check_device_options(cfg: TrainConfig, device: torch.device, world_size: int = 1) -> None:
    """What the device refuses (also run by --dry-run, as one process)."""
    if cfg.precision == "fp16" and device.type != "cuda":
        raise UserError("--precision fp16 needs a CUDA GPU; use --precision bf16 on the CPU")
    if cfg.sync_bn and world_size > 1 and device.type != "cuda":
        raise UserError("--sync-bn needs CUDA GPUs (PyTorch's SyncBatchNorm has no CPU version); drop it with -d cpu")
    if cfg.cuda_graph and device.type != "cuda":
        raise UserError("--cuda-graph records the training step on a CUDA GPU; drop it on the CPU")
    if cfg.cuda_graph and world_size > 1:
        raise UserError("--cuda-graph works in a single process; drop it under torchrun")


def note_unused_flags(cfg: TrainConfig, device: torch.device, world_size: int, log) -> None:
    """Flags this run will not use, said once (by --dry-run too) rather than dropped without a word."""
    hyper, preset, defaults = resolve_hyper(cfg), PRESETS[cfg.model], TrainConfig()

    def set_here(flag: str) -> bool:  # typed for this run: a resume's others come from its snapshot
        return getattr(cfg, flag) != getattr(defaults, flag) and (cfg.typed is None or flag in cfg.typed)
    if cfg.sync_bn and world_size == 1:  # (a resume may run alone what torchrun started)
        log("note: --sync-bn shares BatchNorm statistics between torchrun's processes; one process: ignored")
    if cfg.precision == "bf16" and device.type == "cpu" and distributed.cpu_has_bf16() is False:
        log("note: this CPU has no bf16 instructions (avx512_bf16 or AMX), so --precision bf16 is emulated "
            "and slower than fp32 here")
    if set_here("gp") and hyper.loss not in ("wgan-gp", "dragan"):
        log(f"note: --gp weights the wgan-gp and dragan penalties; --loss {hyper.loss} has none: ignored")
    if set_here("embed") and not preset.conditional:
        log(f"note: --embed sets how labels condition the nets; --model {cfg.model} draws without labels: ignored")
    if set_here("aux") and not (preset.conditional and preset.aux):
        log(f"note: --aux weights the ACGAN class loss; --model {cfg.model} has no class head: ignored")
    if set_here("ema_decay") and not cfg.ema:
        log("note: --ema-decay sets the decay of G's moving-average copy; --no-ema keeps none: ignored")
    if preset.loss == "vae":  # one optimizer for encoder and decoder, one update per batch
        for flag in ("dlr", "n_critic"):
            if set_here(flag):
                log(f"note: --{flag.replace('_', '-')} sets D's side; --model cvae has no D: ignored")
    if set_here("beta") and preset.optimizer == "rmsprop":
        log(f"note: --beta sets Adam's beta1; --model {cfg.model} trains with RMSprop: ignored")
    if set_here("loss") and hyper.loss == "wgan" and preset.optimizer != "rmsprop":
        log(f"note: --loss wgan clips D's weights, which WGAN pairs with RMSprop and 5 critic steps (--model wgan); "
            f"--model {cfg.model} trains with Adam and --n-critic {hyper.n_critic}, often unstable with clipping")
    if set_here("lr") and cfg.glr and (cfg.dlr or preset.loss == "vae"):
        log("note: --lr sets both nets' learning rate; --glr sets " + ("the model's" if preset.loss == "vae" else
                                                                     "G's and --dlr D's") + ": --lr ignored")
    if set_here("deterministic") and device.type != "cuda":
        log("note: --deterministic asks for deterministic GPU kernels; CPU runs repeat at a fixed thread count "
            "already: ignored")
    if set_here("synthetic_size") and visible_entries(Path(cfg.train_dir)):
        log(f"note: --synthetic-size sets how many built-in faces an empty data folder gets; {cfg.train_dir} "
            f"is not empty: ignored")


def train(cfg: TrainConfig) -> Path | None:
    validate_train(cfg)
    hyper = resolve_hyper(cfg)
    preset = PRESETS[cfg.model]
    dist = distributed.setup(cfg.device)
    # Messages come from the main process only, so `log` is safe to call on every rank.
    console = _Console(sys.stderr)
    log = (lambda msg: print(msg, file=console)) if dist.is_main and not cfg.quiet else (lambda msg: None)
    device = distributed.pick_device(cfg.device, dist.local_rank if dist.world_size > 1 else None)
    check_device_options(cfg, device, dist.world_size)
    if device.type == "cuda":
        _configure_cuda(cfg.deterministic)

    cfg, run, resume_path, snapshot = resolve_resume(cfg)
    sample_dir, ckpt_dir = Path(cfg.sample_dir) / run, Path(cfg.checkpoint_dir) / run
    hyper, preset = resolve_hyper(cfg), PRESETS[cfg.model]
    if resume_path is not None and int(snapshot["step"]) >= cfg.iterations:  # before anything is touched
        log(f"step {snapshot['step']} already reaches -i {cfg.iterations}: nothing to train; raise -i to continue")
        distributed.cleanup()
        return resume_path.parent if dist.is_main else None
    fresh_folder = check_run_folder(cfg, ckpt_dir, resume_path, snapshot)
    judge, judge_info = check_before_data(cfg, resume_path, snapshot, log)
    judge = judge.to(device) if judge is not None and dist.is_main else None  # only the main process evaluates

    # ---- data ---------------------------------------------------------------------------------
    if dist.is_main:  # the main process prepares the cache; the others wait, then open it
        data = load_training_data(cfg, log)
    dist.barrier()
    if not dist.is_main:
        data = open_packed(cfg.train_dir, cfg.image_size)
    if judge is not None:  # before a step is trained: --eval-every's judge-FID needs varied real images
        check_real_images(data, "add varied images and run `anime-gan prepare` again, or drop --eval-every")
    schema = data.schema
    mcfg = _model_config(cfg, preset, schema)
    conditional = preset.conditional  # _model_config refused a conditional preset without labels
    aux = aux_kind(cfg.model, mcfg) if conditional else None

    # ---- models and optimizers ------------------------------------------------------------------
    torch.manual_seed(cfg.seed)
    G, D = build(cfg.model, mcfg)
    G, D = G.to(device), D.to(device)
    if cfg.sync_bn and dist.world_size > 1:
        G, D = (torch.nn.SyncBatchNorm.convert_sync_batchnorm(m) for m in (G, D))
    if cfg.channels_last:
        G, D = G.to(memory_format=torch.channels_last), D.to(memory_format=torch.channels_last)
    # D runs on real and fake; a gradient penalty adds a pass and its double backward: about two more.
    d_passes = 1 if preset.loss == "vae" else 4 if hyper.loss in ("wgan-gp", "dragan") else 2
    _check_batch_fits(cfg, G, D, mcfg, device, d_passes)
    # Notes come after every refusal: a refused run gives its reason, not advice for a run never started.
    note_unused_flags(cfg, device, dist.world_size, log)
    if cfg.batch_size > len(data):
        log(f"note: -b {cfg.batch_size} is more than the {len(data)} images in {cfg.train_dir}: every batch "
            f"repeats images; a larger data set (or a smaller -b) trains better")
    weak = weak_judge_note(judge_info["path"], judge_info) if judge is not None else None
    if weak:
        log(weak + " (--eval-every's scores)")
    if judge is not None and "accuracy" not in training_metrics(cfg):
        log(f"note: --model {cfg.model} draws without labels, so --eval-every scores judge-FID and diversity, "
            f"not accuracy")
    G_ema = copy.deepcopy(G).eval().requires_grad_(False) if cfg.ema else None
    opt_G, opt_D = _optimizers(G, D, preset, hyper, device, capturable=cfg.cuda_graph)
    scaler = torch.amp.GradScaler("cuda", enabled=cfg.precision == "fp16")
    g_fwd, d_fwd = _maybe_compile(G, D, cfg.compile, log, cfg.quiet)

    # ---- run folders (only now: every check above ran before anything was written) ----------
    created, lock, done = [], None, None  # done: see the loop
    if dist.is_main:
        created = _make_run_folders(sample_dir, ckpt_dir, G, D)
        lock = checkpoint.lock_run(ckpt_dir)  # released however the run ends, by the kernel after kill -9
        checkpoint.remove_partial(ckpt_dir)
    try:
        gen = torch.Generator(device)
        checkpoint.seed_rank_streams(gen, cfg.seed, dist)  # (only now: G and D were built from one stream on every rank)
        batches = Batches(data, cfg.batch_size, device, gen, cfg.data_on_device, cfg.flip)
        fake_labels = LabelSampler(data, device)

        encode_labels = condition_encoder(schema, cfg.embed, device) if conditional else None

        def cond(labels):
            return encode_labels(labels) if conditional else labels[:, :0]

        # The run's own seed on a resume: a --seed typed then changes nothing (as its note says), and
        # fake_step_<N>.png keeps showing the same noise, so the progress GIF does not jump.
        grid_seed = int(snapshot["config"]["seed"]) if snapshot is not None else cfg.seed
        fixed_z, fixed_labels, row_names = fixed_grid(schema if conditional else None, cfg.z_dim, 8, grid_seed)
        fixed_z, fixed_c = fixed_z.to(device), cond(fixed_labels.to(device))

        # ---- init: scratch or resume ----------------------------------------------------------------
        acc = _Accumulator(device, dist)
        state = checkpoint.TrainState(G, D, G_ema, opt_G, opt_D, scaler, gen, acc,  # what snapshots save and restore
                                      checkpoint.run_id(snapshot, resume_path, ckpt_dir))
        start, records = 0, []
        if resume_path is not None:
            start, records, saved, reseeded = checkpoint.restore_snapshot(resume_path, state, cfg,
                                                                schema.to_dict() if schema else None, log, snapshot,
                                                                dist)
            for opt in (opt_G, opt_D):
                _match_device(opt, device, cfg.cuda_graph)
            # The snapshot's groups also carry its lr and betas; this session's flags win (noted below).
            _set_hyper(opt_G, hyper.glr, hyper.betas)
            if opt_D is not opt_G:
                _set_hyper(opt_D, hyper.dlr, hyper.betas)
            log(f"resumed {run} from step {start} ({resume_path})")
            changed = _changed_settings(saved, cfg, penalty=hyper.loss in ("wgan-gp", "dragan"), reseeded=reseeded)
            if changed:  # allowed (a lower --lr to finish, say), but never silently
                log("note: continuing with changed settings: " + changed)
            if not reseeded:  # a --seed typed had no effect: the snapshots keep the run's own, which
                cfg = replace(cfg, seed=saved.seed)  # the next resume's fixed grid is drawn from
        if dist.is_main:
            # the logs continue from the snapshot's step (empty for a new run): later lines go, so
            # steps trained again after a crash are not logged twice
            write_text_atomically(ckpt_dir / "stats.jsonl", "".join(json.dumps(r) + "\n" for r in records))
            for log_file in (ckpt_dir / "metrics.jsonl", ckpt_dir / "metrics_flat.jsonl"):
                if not fresh_folder and log_file.exists():
                    kept = [r for r in checkpoint.read_jsonl(log_file) if r.get("step", 0) <= start]
                    write_text_atomically(log_file, "".join(json.dumps(r) + "\n" for r in kept))
        if dist.is_main and start < cfg.iterations:  # the settings this session trains with (a resumed run may change some)
            write_text_atomically(ckpt_dir / "config.json", json.dumps(
                {"train": cfg.to_dict(), "hyper": asdict(hyper), "model": checkpoint.plain(asdict(mcfg)),
                 "schema": schema.to_dict() if schema else None, "world_size": dist.world_size,
                 "run_id": state.run_id}, indent=2))
        # also a resume told to sample into another folder (-s): its grids sit beside the real ones too
        if dist.is_main and (fresh_folder or not (sample_dir / "real.png").exists()):
            real = torch.from_numpy(data.images[:64].copy()).float().div(127.5).sub(1)
            render.save_grid(real, sample_dir / "real.png", nrow=8)
        tb = _tensorboard(ckpt_dir, cfg, start) if dist.is_main else None
        if start < cfg.iterations:
            log(f"training {cfg.model} ({hyper.loss} loss) on {len(data)} images, {device}, "
                f"batch {cfg.batch_size} x {dist.world_size} = {cfg.batch_size * dist.world_size} global, "
                f"G {sum(p.numel() for p in G.parameters()):,} / D {sum(p.numel() for p in D.parameters()):,} "
                f"params -> {ckpt_dir}")

        # A CUDA graph must not keep autocast's cast-weight cache: the cached copies would be stale.
        autocast = (torch.autocast(device.type, dtype=torch.bfloat16 if cfg.precision == "bf16" else torch.float16,
                                   cache_enabled=not cfg.cuda_graph)
                    if cfg.precision != "fp32" else nullcontext())
        if preset.loss == "vae":  # real batches only: the VAE draws its own z from the encoder
            run_step, n_draws, draw_labels = VaeStep(G, D, g_fwd, d_fwd, opt_G, scaler, dist, cond, autocast), 1, None
        else:
            run_step = GanStep(G, D, g_fwd, d_fwd, opt_G, opt_D, scaler, dist, hyper.loss, aux, cfg.aux,
                               mcfg.class_sizes, cond, autocast, cfg.mode_seeking, cfg.gp)
            n_draws, draw_labels = hyper.n_critic, fake_labels
        if cfg.cuda_graph:
            run_step = CudaGraphStep(run_step, {opt_G, opt_D}, log)
        stop = _StopFlag()
        bar = tqdm(total=cfg.iterations, initial=start, desc=run, unit="it", file=console,
                   disable=True if (cfg.quiet or not dist.is_main) else None, dynamic_ncols=True)
        step, window_start, window_images = start, time.perf_counter(), 0
        done = start  # the last step whose updates all landed: only that state can be saved
        saved_step = start
        alone = False  # stopped at once on this process only: the others cannot join a snapshot
        try:
            while step < cfg.iterations:
                # Ranks agree to stop every few steps (one tiny all-reduce and host sync each time);
                # a single process just looks at its flag.
                stop.requested |= console.gone  # `2>&1 | head`, a closed terminal: stop as for SIGTERM
                if (dist.world_size == 1 or step % STOP_AGREEMENT_EVERY == 0) and dist.any(stop.requested, device):
                    stop.requested = True  # on every rank, also one the signal did not reach
                    break
                step += 1
                # (1) n_critic D updates, then (2) one G update: see step.py
                draws = step_inputs(batches, draw_labels, gen, cfg.z_dim, n_draws, cfg.channels_last,
                                    paired=cfg.mode_seeking > 0)
                for name, value in run_step(draws):
                    acc.add(name, value)
                # (3) EMA of G's weights: smoother samples than the raw G at any single step
                if G_ema is not None:
                    # Ramp the decay up so early snapshots are not just the initial weights.
                    _ema_update(G_ema, G, min(cfg.ema_decay, (1 + step) / (10 + step)))
                done = step
                window_images += cfg.batch_size * dist.world_size
                bar.update(1)

                # (4) log, sample, checkpoint (the only places that read values back from the device)
                log_step = step % cfg.log_every == 0 or step % cfg.check == 0
                if log_step or step == cfg.iterations:
                    # A run that ends between log steps shows its last losses, but keeps their window
                    # open in the snapshot: after --resume the next line averages what a straight run's does.
                    rec = acc.flush(step) if log_step else {**acc.flush(step, keep=True), "partial": True}
                    elapsed = time.perf_counter() - window_start
                    rec["img_per_s"] = round(window_images / max(elapsed, 1e-9), 1)
                    window_start, window_images = time.perf_counter(), 0
                    _check_finite(rec, step, ckpt_dir, dist, device)
                    records.append(rec)
                    if dist.is_main:
                        _append_stats(ckpt_dir, rec, tb)
                        bar.set_postfix({k: f"{v:.3f}" for k, v in rec.items() if k.endswith("loss")}
                                        | {"img/s": rec["img_per_s"]})
                        if bar.disable:  # a log file gets a line every --log-every steps, not a bar
                            log(" ".join(f"{k} {v}" for k, v in rec.items() if k != "partial")
                                + (f" (over the steps since the last line; a full line comes every {cfg.log_every})"
                                   if rec.get("partial") else ""))
                if dist.is_main and (step % cfg.sample == 0 or step == cfg.iterations):
                    _write_samples(G_ema or G, fixed_z, fixed_c, row_names,
                                   sample_dir / f"fake_step_{step}.png", tb, step)
                    _plot(records, ckpt_dir, aux is not None)
                if judge is not None and (step % cfg.eval_every == 0 or step == cfg.iterations):
                    try:
                        evaluate_during_training(G_ema or G, cfg, schema, judge, data, device, step, ckpt_dir,
                                                 tb, judge_info)
                    except (UserError, OSError) as e:  # (a full disk, a judge problem): the steps trained are kept
                        if isinstance(e, Diverged) or dist.world_size > 1 or saved_step == step:
                            raise  # (other ranks cannot join a snapshot from here)
                        checkpoint.save_snapshot(ckpt_dir, step, state, cfg, mcfg, schema, dist)
                        what = os_error_line(e) if isinstance(e, OSError) else str(e)
                        raise UserError(f"{what} (step {step} was saved first; --resume {shlex.quote(str(ckpt_dir))} "
                                        f"goes on from there)") from None
                if step % cfg.check == 0 or step == cfg.iterations:
                    checkpoint.save_snapshot(ckpt_dir, step, state, cfg, mcfg, schema, dist)
                    saved_step = step
            # A signal may have reached only some ranks since they last agreed: agree once more, so
            # that all of them, or none, take the stop branch below (it holds collectives).
            stop.requested = dist.any(stop.requested, device)
        except KeyboardInterrupt:
            stop.requested = True  # a second Ctrl-C: stop now; saved below unless it cut a step short
            # With other ranks, they are already in the next step's all-reduce: a snapshot's
            # collectives from this rank alone would be matched against it and crash gloo/NCCL.
            alone = dist.world_size > 1
        except BaseException:
            stop.restore()
            raise
        finally:
            bar.close()
        try:
            stop.hold()  # from here on, more Ctrl-C's would only cut the final snapshot short
            cut_short = stop.requested and (done < step or alone)
            if cut_short:  # some of G, D, the optimizers and the EMA hold step `step`, some not
                last = checkpoint.resumable_steps(ckpt_dir)
                why = (f"stopped at once at step {done} on this process alone: not saved, as the other "
                       f"processes cannot join a snapshot now" if done == step else
                       f"stopped in the middle of step {step}: not saved, as a step cut short cannot be "
                       f"continued exactly")
                log(f"{why}; " + (f"continue from step {last[-1]} with --resume {shlex.quote(str(ckpt_dir))}" if last
                                  else "no checkpoint yet: the same command starts the run afresh"))
            elif stop.requested and step > start:
                if step > saved_step:  # (the loop may have just saved this step: a --check or the last one)
                    # Between log steps: a "partial" line, as at a last step, and the snapshot keeps
                    # the window open (a resume drops that line and logs on as a straight run would).
                    rec = {} if step % cfg.log_every == 0 else {**acc.flush(step, keep=True), "partial": True}
                    _check_finite(rec, step, ckpt_dir, dist, device)
                    checkpoint.save_snapshot(ckpt_dir, step, state, cfg, mcfg, schema, dist)
                    if dist.is_main:
                        if rec:
                            rec["img_per_s"] = round(window_images / max(time.perf_counter() - window_start, 1e-9), 1)
                            records.append(rec)
                            _append_stats(ckpt_dir, rec, tb)
                        _plot(records, ckpt_dir, aux is not None)
                log(f"stopped at step {step}: saved {ckpt_dir / f'G_{step}.ckpt'}; " +
                    (f"continue with --resume {shlex.quote(str(ckpt_dir))}" if step < cfg.iterations
                     else "that was the last step: the run is done"))
            if tb is not None:
                tb.close()
            if not alone:  # (its peers are mid-collective: leaving is enough, the OS closes the links)
                distributed.cleanup()
        finally:
            stop.restore()
        if cut_short or (stop.requested and done == start):  # nothing, or not all of it, saved
            raise KeyboardInterrupt  # exit status 130, as for any interrupted command
        return ckpt_dir if dist.is_main else None  # one process names the run, not one per rank
    except BaseException:
        if done is None or done == start:  # a failed or interrupted start leaves no run folders behind
            _remove(created)
        raise
    finally:
        if lock is not None:
            # A disk that turned read-only keeps the lock (the next run takes a dead pid's lock
            # over); this error must not replace the one that says which file could not be written.
            with suppress(OSError):
                lock.release()


# ---- helpers -------------------------------------------------------------------------------------

def resolve_resume(cfg: TrainConfig) -> tuple[TrainConfig, str, Path | None, dict | None]:
    """(the config a --resume trains with, the run's name, the G_<N>.ckpt it continues, that file's
    contents); with no --resume, (cfg, its run name, None, None). Also what `--dry-run` shows."""
    if cfg.resume not in (None, "latest") and cfg.typed is not None:
        # --resume RUN (or RUN/G_<N>.ckpt) alone continues that run in its own folder; with --name NEW
        # it branches into NEW beside it, and with -c into that folder. config.json records where.
        given = Path(cfg.resume).resolve()  # `--resume .` inside the run folder names it too
        folder = given if given.is_dir() else given.parent
        cfg = replace(cfg, name=cfg.name or folder.name,
                      checkpoint_dir=cfg.checkpoint_dir if "checkpoint_dir" in cfg.typed else str(folder.parent))
    run = cfg.run_name()  # named by the flags given: the snapshot's settings below do not rename it
    resume_path = checkpoint.resume_path(cfg.resume, Path(cfg.checkpoint_dir) / run)
    if resume_path is None:
        return cfg, run, None, None
    snapshot = checkpoint.load(resume_path, "generator")
    cfg = _with_snapshot_settings(cfg, snapshot)
    validate_train(cfg)
    # before the data is packed: a wrong --image-size would first cost a cache of that size
    checkpoint.check_architecture(resume_path, TrainConfig.from_dict(snapshot["config"]), cfg)
    checkpoint.check_same_run(resume_path, snapshot, Path(cfg.checkpoint_dir) / run)
    return cfg, run, resume_path, snapshot


def _with_snapshot_settings(cfg: TrainConfig, g: dict) -> TrainConfig:
    """`cfg` with every training setting that was not typed taken from the config of the G snapshot
    `g`, so that `--resume` alone continues the run as it was started (-i, --lr, the model, the data)."""
    if cfg.typed is None:
        return cfg
    saved = TrainConfig.from_dict(g["config"])
    keep = set(SESSION_SETTINGS) | set(cfg.typed)
    if "lr" in keep:  # --lr sets both nets: a saved --glr/--dlr would otherwise take precedence
        keep |= {"glr", "dlr"}
    inherited = {k: getattr(saved, k) for k in vars(saved) if k not in keep}
    # -t and -s were often relative to where training ran: the folders they named then
    for flag, key in (("train_dir", "data_path"), ("sample_dir", "sample_path")):
        if flag in inherited and Path(g.get(key) or "/nonexistent").is_dir():
            inherited[flag] = g[key]
    return replace(cfg, **inherited)


def _changed_settings(saved: TrainConfig, cfg: TrainConfig, penalty: bool, reseeded: bool = False) -> str:
    """The settings this session trains with otherwise than the snapshot, as `--flag old -> new`:
    the optimizer's and the loss's as resolved (a saved --lr shows as --glr/--dlr), the others as
    given; not -i, the architecture (it must match) or where the run goes. --gp only where the loss
    has a penalty for it to weigh. `reseeded`: the snapshot's random streams could not all be
    restored here (another process count or device kind), so --seed seeds the new ones."""
    old_h, new_h = asdict(resolve_hyper(saved)), asdict(resolve_hyper(cfg))
    old_h["betas"], new_h["betas"] = old_h["betas"][0], new_h["betas"][0]  # beta2 is never a flag
    flag = {"betas": "beta", "n_critic": "n-critic"}
    changed = [(flag.get(k, k), old_h[k], new_h[k]) for k in old_h if old_h[k] != new_h[k]]
    # precision and sync-bn are this session's, but they change the numbers: a resume that drops them says so
    skip = (set(SESSION_SETTINGS) - {"precision", "sync_bn"}) | set(checkpoint.ARCHITECTURE) | {
        "iterations", "sample_dir", "lr", "glr", "dlr", "beta", "n_critic", "loss"}
    for k in (f.name for f in fields(TrainConfig) if f.name not in skip):
        old, new = getattr(saved, k), getattr(cfg, k)
        if (old != new and not (k == "train_dir" and Path(old).resolve() == Path(new).resolve())
                and not (k == "gp" and not penalty)):
            changed.append((k.replace("_", "-"), old, new))
    note = ", ".join(f"--{k} {old} -> {new}" for k, old, new in changed)
    if any(k == "seed" for k, _, _ in changed):
        note += ("; --seed seeds the random streams drawn anew for this process count or device" if reseeded
                 else "; --seed has no effect here: the run's random streams are restored")
    return note


def _check_batch_fits(cfg: TrainConfig, G, D, mcfg: ModelConfig, device, d_passes: int) -> None:
    """Refuse a -b whose step cannot fit in memory, before the first step: on the CPU, Linux's
    OOM killer would end the run with no message (a failed CUDA allocation is caught in cli.main)."""
    free = distributed.free_memory(device)
    if free is None:
        return
    per_image = saved_bytes_per_image(G, D, mcfg.z_dim, mcfg.cond_dim, mcfg.image_size, d_passes)
    if cfg.precision != "fp32":
        per_image //= 2  # at most every saved activation halves: still a lower bound
    if device.type == "cpu":  # the processes of a torchrun on this machine share its memory
        per_image *= int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    # Gradients and workspaces come on top of the bound: measured peaks were 1.05-1.4x it.
    need = 1.25 * per_image * cfg.batch_size
    if need > free:
        fits = int(free / (1.5 * max(per_image, 1)))  # the suggestion keeps a wider margin
        fix = (f"use -b {fits} or less" if fits >= 1 else "use a smaller --nf or --image-size")
        raise UserError(f"-b {cfg.batch_size}: one step of {cfg.model} at {mcfg.image_size}px needs about "
                        f"{need / 2**30:.1f} GiB, more than the {free / 2**30:.1f} GiB free on {device}; {fix}")


def _model_config(cfg: TrainConfig, preset, schema: Schema | None) -> ModelConfig:
    """The architecture for this data; refuses presets whose labels the data cannot give."""
    if preset.conditional and schema is None:
        raise UserError(f"{cfg.train_dir}: --model {cfg.model} is conditional but this folder has no "
                        f"labels (tags.pickle, train.json or tags.csv); use --model dcgan (or dcgan-gp, a WGAN-GP), "
                        f"or label it")
    if schema is not None and schema.multi_label and not preset.supports_multi_label:
        raise UserError(f"--model {cfg.model} needs one-of-N labels, but {cfg.train_dir} is multi-label; "
                        f"use cgan, wgan-gp, sagan or projection")
    if preset.conditional and preset.aux and schema.multi_label and schema.one_of_groups:
        # The class head is either per-group softmaxes or one sigmoid over every class, not both.
        raise UserError(f"--model {cfg.model}'s class head needs labels that are all one-of-N or all "
                        f"multi-label, but {cfg.train_dir} mixes both ({', '.join(g.name for g in schema.groups)}); "
                        f"use cgan, wgan-gp, sagan or projection")
    c = preset.conditional  # an unconditional preset ignores the labels, if there are any
    return ModelConfig(z_dim=cfg.z_dim, cond_dim=cond_dim(schema, cfg.embed) if c else 0,
                       class_sizes=schema.class_sizes if c else (), multi_label=schema.multi_label if c else 0,
                       nf=cfg.nf, d_nf=cfg.d_nf, image_size=cfg.image_size)


def _check_space(ckpt_dir: Path, G, D) -> None:
    """Refuse to start when the disk cannot hold one snapshot: G_<N>.ckpt (G and its EMA copy) and
    D_<N>.ckpt (D and both optimizers' two Adam moments), in fp32."""
    import shutil
    g, d = (sum(p.numel() for p in m.parameters()) for m in (G, D))
    need = 4 * (4 * g + 3 * d)
    free = shutil.disk_usage(ckpt_dir).free
    if free < need:
        raise UserError(f"{ckpt_dir}: only {free / 2**20:.0f} MiB free, one snapshot (its G_<N> and D_<N> "
                        f"files) needs about {need / 2**20:.0f} MiB; free space or choose another -c")


def _make_run_folders(sample_dir: Path, ckpt_dir: Path, *modules) -> list[Path]:
    """Create the run's folders, checked writable and with room for snapshots. Returns the
    folders made here, so that a setup error can take them away again."""
    created = []
    for d in (sample_dir, ckpt_dir):
        top = next((p for p in reversed([d, *d.parents]) if not p.exists()), None)
        if top is not None and top not in created:
            created.append(top)
    try:
        for d in (sample_dir, ckpt_dir):
            writable_folder(d, "choose another folder with -s/-c")
        _check_space(ckpt_dir, *modules)
    except UserError:
        _remove(created)
        raise
    return created


def _remove(folders: list[Path]) -> None:
    import shutil
    for d in folders:
        shutil.rmtree(d, ignore_errors=True)


def _optimizers(G, D, preset, hyper, device, capturable=False):
    # capturable: step counts stay on the device, so a CUDA graph can record optimizer.step()
    extra = {"capturable": True} if capturable else {}
    if preset.optimizer == "rmsprop":
        return (torch.optim.RMSprop(G.parameters(), lr=hyper.glr, **extra),
                torch.optim.RMSprop(D.parameters(), lr=hyper.dlr, **extra))
    if device.type == "cuda":
        extra["fused"] = True  # one kernel over all tensors instead of a few per tensor
    if preset.loss == "vae":  # one optimizer over decoder (G) and encoder (D slot)
        params = list(G.parameters()) + list(D.parameters())
        opt = torch.optim.Adam(params, lr=hyper.glr, betas=hyper.betas, **extra)
        return opt, opt
    return (torch.optim.Adam(G.parameters(), lr=hyper.glr, betas=hyper.betas, **extra),
            torch.optim.Adam(D.parameters(), lr=hyper.dlr, betas=hyper.betas, **extra))


def _configure_cuda(deterministic: bool) -> None:
    if deterministic:
        # cuBLAS reads this when its first handle is made, which is later than here.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.deterministic = True
        # warn_only: an op with no deterministic kernel warns once instead of stopping the run.
        torch.use_deterministic_algorithms(True, warn_only=True)
    # Fixed shapes every step: cuDNN can time its algorithms once and keep the fastest, but the
    # timing may pick differently from run to run.
    torch.backends.cudnn.benchmark = not deterministic


def _set_hyper(opt, lr: float, betas) -> None:
    for group in opt.param_groups:
        group["lr"] = lr
        if "betas" in group:  # Adam; RMSprop has none
            group["betas"] = tuple(betas)


def _match_device(opt, device, capturable: bool) -> None:
    """A snapshot's optimizer groups keep the flags of the run that saved them (say, a CPU run);
    set them for this device instead, with the step counts where those flags need them."""
    fused = device.type == "cuda" and isinstance(opt, torch.optim.Adam)
    for group in opt.param_groups:
        if "fused" in group:
            group["fused"] = fused or None  # None: what Adam's constructor leaves off the GPU
        group["capturable"] = capturable
        for p in group["params"]:
            state = opt.state.get(p, {})
            if "step" in state:
                on_device = fused or capturable
                state["step"] = state["step"].to(p.device if on_device else "cpu", torch.float32)


def _maybe_compile(G, D, enabled: bool, log, quiet: bool = False):
    if not enabled:
        return G, D
    on_cpu = next(G.parameters()).device.type == "cpu"  # where "No CUDA runtime is found" says nothing
    if quiet or on_cpu:  # the compiler's build notes are not ours to print
        import logging
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    return _CompiledOrEager(G, "G", log), _CompiledOrEager(D, "D", log)


class _CompiledOrEager:
    """torch.compile(module), falling back to the plain module if compiling fails.

    Compilation happens lazily at the first call, so that is where a missing compiler or an
    unsupported platform shows up; the run then continues uncompiled and says so once."""

    def __init__(self, module, name: str, log):
        self.module, self.name, self.log = module, name, log
        try:
            self.compiled = torch.compile(module)
        except Exception as e:  # torch without dynamo support on this platform
            self._give_up(e)

    def _give_up(self, e: Exception) -> None:
        self.log(f"--compile: {self.name} cannot be compiled here ({type(e).__name__}: "
                 f"{str(e).splitlines()[0][:120] if str(e) else ''}); continuing without it")
        self.compiled = None

    def __call__(self, *args):
        if self.compiled is not None:
            try:
                return self.compiled(*args)
            except Exception as e:
                if out_of_memory(e):  # the batch, not the compiler: uncompiled it would not fit either
                    raise
                self._give_up(e)
        return self.module(*args)


@torch.no_grad()
def _ema_update(ema, model, decay: float) -> None:
    # foreach: a handful of kernels for all tensors instead of one per tensor (matters on GPU)
    torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1.0 - decay)
    torch._foreach_copy_(list(ema.buffers()), list(model.buffers()))


class _Accumulator:
    """Sums losses on the device; values are read back only when a line is logged."""

    def __init__(self, device, dist):
        self.device, self.dist, self.sums, self.counts = device, dist, {}, {}

    def add(self, key, value):
        v = value.detach().float()
        self.sums[key] = self.sums[key] + v if key in self.sums else v.clone()
        self.counts[key] = self.counts.get(key, 0) + 1

    def peek(self) -> dict:
        """The mean of each loss since the last flush, over every process (a collective: all ranks call it)."""
        if not self.sums:
            return {}
        means = self.dist.average(torch.stack([self.sums[k] / self.counts[k] for k in self.sums]))
        return dict(zip(self.sums, means.tolist()))

    def flush(self, step: int, keep: bool = False) -> dict:
        rec = {"step": step, **{k: round(v, 6) if math.isfinite(v) else v for k, v in self.peek().items()}}
        if not keep:
            self.sums, self.counts = {}, {}
        return rec

    def state(self) -> dict:
        return {"sums": {k: v.cpu() for k, v in self.sums.items()}, "counts": dict(self.counts)}

    def load(self, state: dict):
        self.sums = {k: v.to(self.device) for k, v in state["sums"].items()}
        self.counts = dict(state["counts"])


def _check_finite(rec: dict, step: int, ckpt_dir: Path, dist, device) -> None:
    """Raise Diverged on every process when any one's losses are NaN/inf: a rank that stopped alone
    would leave the others waiting in the next all-reduce."""
    bad = [k for k, v in rec.items() if isinstance(v, float) and not math.isfinite(v)]
    if dist.any(bool(bad), device):
        good = checkpoint.resumable_steps(ckpt_dir)
        last = f"the last good checkpoint is {ckpt_dir / f'G_{good[-1]}.ckpt'}" if good else "no checkpoint was written"
        what = f"{', '.join(bad)} = {rec[bad[0]]}" if bad else "on another process"
        raise Diverged(f"training diverged by step {step} ({what}); {last}; try a lower --lr, or --precision fp32")


def _append_stats(ckpt_dir: Path, rec: dict, tb) -> None:
    append_line(ckpt_dir / "stats.jsonl", json.dumps(rec))
    if tb is not None:
        for k, v in rec.items():
            if k != "step" and not isinstance(v, bool):  # ("partial": true)
                tb.add_scalar(k, v, rec["step"])


@torch.no_grad()
def _write_samples(G, z, c, row_names, path: Path, tb, step: int) -> None:
    was_training = G.training
    G.eval()
    images = G(z, c).float().cpu()
    G.train(was_training)
    nrow = len(z) // len(row_names)
    render.save_grid(images, path, nrow=nrow,
                     row_labels=row_names if row_names[0] is not None else None, title=f"step {step}")
    if tb is not None:
        tb.add_images("fake", images.add(1).div(2).clamp(0, 1), step)


def _plot(records, ckpt_dir: Path, has_classifier: bool) -> None:
    render.plot_curves(records, ["d_loss", "g_loss"], ckpt_dir / "loss.png", title="GAN losses", smooth=5)
    if has_classifier:
        render.plot_curves(records, ["d_cls", "g_cls"], ckpt_dir / "classifier_loss.png",
                           title="classification losses (D on real, G on fake)", smooth=5)


def _tensorboard(ckpt_dir: Path, cfg: TrainConfig, start: int):
    if not cfg.tensorboard:
        return None
    SummaryWriter = _tensorboard_writer()
    # purge_step: TensorBoard hides the old files' events from this step on, so the steps a resume
    # trains again are not drawn twice (the same trim as stats.jsonl and metrics.jsonl)
    return SummaryWriter(str(ckpt_dir / "tensorboard"), purge_step=start + 1 if start else None)


def _tensorboard_writer():
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UserError("--tensorboard (given, or the resumed run's) needs the tensorboard package: "
                        "pip install tensorboard (or pip install -e \".[tensorboard]\" in a clone), or train without it "
                        "with --no-tensorboard") from None
    return SummaryWriter


class _Console:
    """stderr for the log and the progress bar. When its reader goes away (`2>&1 | head`, a closed
    terminal), writing fails; then the run goes on silently to its next step and stops there with a
    checkpoint, as for SIGTERM, instead of dying with the steps since the last one lost."""

    def __init__(self, stream):
        self.stream, self.gone = stream, False

    def write(self, text: str) -> int:
        self._try(self.stream.write, text)
        return len(text)

    def flush(self) -> None:
        self._try(self.stream.flush)

    def _try(self, method, *args) -> None:
        if not self.gone:
            try:
                method(*args)
            except (OSError, ValueError):  # EPIPE, EIO from a hung-up terminal; ValueError: closed file
                self.gone = True

    def __getattr__(self, name):  # isatty, fileno, encoding: tqdm asks the real stream
        return getattr(self.stream, name)


class _StopFlag:
    """SIGINT/SIGTERM/SIGHUP ask the loop to stop after the current step; the loop then checkpoints.
    A signal the shell set to be ignored (SIGHUP under `nohup`) stays ignored."""

    def __init__(self):
        self.requested, self.holding = False, False
        self._old = {}
        try:
            for sig in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)):
                if sig is not None and signal.getsignal(sig) is not signal.SIG_IGN:
                    self._old[sig] = signal.signal(sig, self._handle)
        except ValueError:  # not the main thread (e.g. called from a test thread): no handlers
            self._old = {}

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT and not self.holding:
            raise KeyboardInterrupt  # second Ctrl-C: stop now
        self.requested = True

    def hold(self):
        """Signals only set the flag from now on (the loop is over; the last save must finish)."""
        self.holding = True

    def restore(self):
        for sig, old in self._old.items():
            signal.signal(sig, old)
