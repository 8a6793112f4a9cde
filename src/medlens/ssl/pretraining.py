"""Self-supervised pretraining of an encoder on unlabeled images (``medlens pretrain``).

Writes ``run/ssl/<method>/``: ``encoder.safetensors`` (a timm state dict without head, which
``model.pretrained`` loads directly), ``card.json`` (method, encoder, data, epochs, losses),
``history.csv`` and ``last.pt`` — weights, optimiser and schedule after the last epoch, so
a killed run continues where it stopped (the epochs run on
:func:`medlens.train.engine.run_epochs`). Under ``torchrun`` every rank trains on its own
share of each epoch (gloo on CPUs, nccl on GPUs), SimCLR/MICLe negatives are gathered
across ranks, and only rank 0 writes.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from rich.progress import Progress
from safetensors.torch import save_file

import medlens
from medlens.data.manifest import load_manifest
from medlens.data.cache import build_cache
from medlens.data.preprocess import Preprocess
from medlens.errors import StageInputMissing
from medlens.models import create_model
from medlens.ssl.methods import MAE, Projected, RotationNet, micle_partners, nt_xent, random_views, rotate_quarters
from medlens.train.checkpoint import fingerprint
from medlens.train.distributed import barrier, dist_info, pick_device
from medlens.train.engine import EpochTask, run_epochs
from medlens.train.loop import array_digest, seed_everything
from medlens.train.schedule import warmup_schedule

if TYPE_CHECKING:
    from medlens.config import StudyConfig

log = logging.getLogger(__name__)

POOL = "pool.parquet"
"""The unlabeled images (Manifest rows) inside ``run/ssl/``."""


def encoder_name(cfg: StudyConfig, method: str) -> str:
    """The timm network a method pretrains: ``ssl.vit`` for MAE, else ``ssl.cnn`` or ``model.name``."""
    return cfg.ssl.vit if method == "mae" else (cfg.ssl.cnn or cfg.model.name)


def pretrain_size(cfg: StudyConfig) -> int:
    """Image side used for pretraining (and for the probe's features)."""
    return cfg.ssl.image_size or cfg.train.image_size


def pseudonymised_pool(cfg: StudyConfig, rows: pd.DataFrame, stage: Path) -> pd.DataFrame:
    """The unlabeled pool under keyed pseudonyms, its pixels copied into ``stage``; the map back kept outside the run."""
    from medlens.data.pseudonyms import PRIVATE_DIR, project_secret, pseudonymise, save_key

    private = cfg.out.parent / PRIVATE_DIR
    secret, _ = project_secret(cfg.data.secret_file, private)
    rows, key = pseudonymise(rows, secret, stage.resolve())
    save_key(key, private / f"{cfg.out.name}-ssl-pool-pseudonyms.csv", cfg.out)
    return rows


def pool_rows(cfg: StudyConfig, manifest: pd.DataFrame, splits: dict, out: Path) -> tuple[pd.DataFrame, bool]:
    """The unlabeled images pretraining may use, and whether they still need the quality gate.

    ``development``: the study's train and validation images (already through QC);
    ``phantom``: a second phantom draw (seed + ``ssl.phantom.seed_offset``) written under
    ``out/phantom``; ``path``: another source read like ``data.path`` and pseudonymised into
    ``out/pool_data``. Test and external images of the study are never in the pool.
    """
    from medlens.data import sources

    ssl = cfg.ssl
    if ssl.unlabeled == "development":
        dev = {s for f in splits["folds"] for s in f["train"] + f["val"]}
        return manifest[manifest["sample_id"].isin(dev)], False
    if ssl.unlabeled == "phantom":
        from medlens.data.synthetic import generate

        s = cfg.data.synthetic
        generate(out / "phantom", seed=cfg.seed + ssl.phantom.seed_offset, n_patients=ssl.phantom.n_patients,
                 image_size=s.image_size, images_per_patient=ssl.phantom.images_per_patient,
                 prevalence=s.prevalence, site_b_fraction=s.site_b_fraction, shared_anatomy=s.shared_anatomy)
        rows = sources.read_synthetic(out / "phantom")
        for col in ("sample_id", "patient_id"):  # other patients than the study's
            rows[col] = "U" + rows[col].astype(str)
        return rows, True
    if ssl.unlabeled_source == "medmnist":
        rows = sources.read_medmnist(ssl.unlabeled_path)
    elif ssl.unlabeled_source == "imagefolder":
        rows = sources.read_imagefolder(ssl.unlabeled_path, on_error=cfg.data.on_error)
    else:
        rows = sources.read_csv(ssl.unlabeled_path, cfg.data.csv_columns, on_error=cfg.data.on_error)
    # another hospital folder or table: pseudonyms, as the study's own ingest
    return pseudonymised_pool(cfg, rows, out / "pool_data"), True


def _network(method: str, encoder: torch.nn.Module, cfg: StudyConfig) -> torch.nn.Module:
    ssl = cfg.ssl
    if method == "mae":
        return MAE(encoder, mask_ratio=ssl.mask_ratio, decoder_dim=ssl.decoder_dim, decoder_depth=ssl.decoder_depth)
    if method == "rotation":
        return RotationNet(encoder)
    return Projected(encoder, ssl.projection_dim)


def _loss(method: str, net: torch.nn.Module, x: torch.Tensor, partner: torch.Tensor | None, gen: torch.Generator,
          cfg: StudyConfig) -> torch.Tensor:
    """One batch's pretext loss (``x``, ``partner``: uint8 images on the device)."""
    ssl = cfg.ssl
    if method == "mae":
        return net(random_views(x, gen, crop_scale=ssl.crop_scale, rotation=0, colour=0, grey_prob=0), gen)
    if method == "rotation":
        turned, k = rotate_quarters(random_views(x, gen, crop_scale=ssl.crop_scale, rotation=0,
                                                 colour=ssl.colour_jitter), gen)
        return F.cross_entropy(net(turned), k)
    views = {"crop_scale": ssl.crop_scale, "rotation": ssl.rotation, "colour": ssl.colour_jitter}
    n = len(x)
    batch = [random_views(x, gen, **views), random_views(x, gen, **views)]
    if partner is not None:
        batch.append(random_views(partner, gen, **views))
    z = net(torch.cat(batch))
    loss = nt_xent(z[:n], z[n:2 * n], ssl.temperature)
    if partner is None:
        return loss
    # MICLe: the other image of the same patient is a positive too. Alone, such pairs share too little on
    # some data (the phantom's patients share only site and disease) and the embedding collapses; keeping
    # the two-view term holds the instance structure while the patient term pulls a patient's images together.
    return 0.5 * (loss + nt_xent(z[:n], z[2 * n:], ssl.temperature))


def _step_seed(seed: int, epoch: int, step: int, rank: int) -> int:
    """A seed for one step of one rank (the epoch's shuffle uses rank 2**31), equal after a resume."""
    return int(np.random.SeedSequence([seed, epoch, step, rank]).generate_state(1)[0])


def pretrain(cfg: StudyConfig, method: str, *, progress: Progress | None = None, resume: bool | str = "auto") -> Path:
    """Pretrain ``method``'s encoder on ``run/ssl/pool.parquet``; returns ``run/ssl/<method>``.

    Parameters
    ----------
    cfg : StudyConfig
        Its ``ssl`` section (epochs, batch size, temperature, mask ratio …), ``model.in_chans``
        and ``engine`` (device, preprocessing) apply.
    method : {'simclr', 'micle', 'mae', 'rotation'}
    resume : {'auto', True, False}
        'auto' continues from a ``last.pt`` written with the same settings; True requires one.
        A finished encoder with the same settings is not retrained.
    """
    ssl = cfg.ssl
    rank, world = dist_info()
    main = rank == 0
    out = cfg.out / "ssl" / method
    pool_path = cfg.out / "ssl" / POOL
    if not pool_path.is_file():
        raise StageInputMissing(f"{pool_path} not found; `medlens pretrain` builds it (ssl.unlabeled)")
    rows = load_manifest(pool_path)
    size, chans = pretrain_size(cfg), cfg.model.in_chans
    x = build_cache(cfg.out, rows["image"].tolist(), Preprocess.from_config(cfg, size=size))
    patients = rows["patient_id"].to_numpy()
    name = encoder_name(cfg, method)
    settings = {"method": method, "model": name, "size": size, "in_chans": chans, "seed": cfg.seed, "world": world,
                "ssl": ssl.model_dump(mode="json", exclude={"methods", "fractions", "probe_seeds", "probe_mode",
                                                            "imagenet"}),
                "preprocess": cfg.engine.preprocess.model_dump(mode="json"), "data": array_digest(x, patients.astype(str))}
    fp = fingerprint(settings)
    card_path = out / "card.json"
    if resume is not True and card_path.is_file() and json.loads(card_path.read_text()).get("fingerprint") == fp \
            and (out / "encoder.safetensors").is_file():
        log.info("%s: encoder up to date, not retrained", out)
        return out
    device = pick_device(cfg.engine.device)
    seed_everything(cfg.seed)
    encoder = create_model(name, num_classes=0, in_chans=chans, image_size=size)
    net = _network(method, encoder, cfg).to(device)
    model = net
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    batch = min(ssl.batch_size, len(x) // world)
    if batch < 2:
        raise StageInputMissing(f"{pool_path}: {len(x)} unlabeled images are too few to pretrain on {world} process(es)")
    steps = len(x) // (batch * world)
    total = ssl.epochs * steps
    opt = torch.optim.AdamW(model.parameters(), lr=ssl.lr, weight_decay=ssl.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(  # one epoch's warm-up, then the cosine
        opt, warmup_schedule(total, min(steps, total), decay_after_warmup=True))
    started = [0.0]  # when the current epoch began

    def batches(epoch: int):
        started[0] = time.perf_counter()
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(_step_seed(cfg.seed, epoch, 0, 2**31)))
        same_patient = method == "micle" and epoch >= int(ssl.micle_simclr_epochs * ssl.epochs)
        partner = torch.from_numpy(micle_partners(patients, np.random.default_rng([cfg.seed, epoch]))) \
            if same_patient else None
        for step in range(steps):
            idx = order[(step * world + rank) * batch:(step * world + rank + 1) * batch]
            gen = torch.Generator().manual_seed(_step_seed(cfg.seed, epoch, step, rank))
            xb = x[idx].to(device, non_blocking=True)
            pb = x[partner[idx]].to(device, non_blocking=True) if partner is not None else None
            yield xb, pb, gen

    def loss(views: tuple) -> torch.Tensor:
        xb, pb, gen = views
        return _loss(method, net, xb, pb, gen, cfg)

    def evaluate(epoch: int, losses: list[float]) -> tuple[None, dict]:
        return None, {"loss": float(np.mean(losses)), "lr": opt.param_groups[0]["lr"],
                      "seconds": round(time.perf_counter() - started[0], 3)}

    history = run_epochs(EpochTask(model, opt, sched, ssl.epochs, steps, batches, loss, evaluate), out,
                         fingerprint=fp, resume=resume, command="pretrain", label=f"pretrain {method}",
                         progress=progress).history
    if main:
        save_file({k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()},
                  str(out / "encoder.safetensors"))
        card = {"method": method, "model": name, "in_chans": chans, "image_size": size, "epochs": ssl.epochs,
                "images": len(x), "patients": int(pd.Series(patients).nunique()), "pool": ssl.unlabeled,
                "pool_source": ssl.unlabeled_source if ssl.unlabeled == "path" else ssl.unlabeled,
                "loss_first_epoch": float(history["loss"].iloc[0]), "loss_last_epoch": float(history["loss"].iloc[-1]),
                "processes": world, "medlens": medlens.__version__, "fingerprint": fp,
                "use": {"model": {"name": name, "in_chans": chans, "pretrained": str(out / "encoder.safetensors")}}}
        card_path.write_text(json.dumps(card, indent=1))
    barrier()
    return out
