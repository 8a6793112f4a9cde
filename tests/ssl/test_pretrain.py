"""`medlens pretrain` / `medlens probe` on tiny studies: outputs, resume, MAE, torchrun, report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from medlens.cli import app
from medlens.config import dump_config
from medlens.models import create_model

TORCHRUN = Path(sys.executable).parent / "torchrun"
SMALL = {"epochs": 2, "batch_size": 16, "fractions": [0.5, 1.0], "probe_seeds": 2}


@pytest.fixture
def study(tmp_path, tiny_config):
    """``study(name, **ssl) -> (cfg, yaml path)``: the tiny phantom study with a test_resnet encoder."""

    def make(name: str, **ssl):
        cfg = tiny_config(tmp_path, name=name, model={"name": "test_resnet"}, engine={"device": "cpu"},
                          ssl={**SMALL, **ssl})
        path = tmp_path / f"{name}.yaml"
        path.write_text(dump_config(cfg))
        return cfg, path

    return make


def test_pretrain_writes_a_loadable_encoder_and_card(study):
    cfg, path = study("cards", methods=["micle", "rotation"])
    res = CliRunner().invoke(app, ["pretrain", str(path)])
    assert res.exit_code == 0, res.output
    pool = pd.read_parquet(cfg.out / "ssl" / "pool.parquet")
    splits = json.loads((cfg.out / "splits.json").read_text())
    assert not set(pool["sample_id"]) & set(splits["test"] + splits["external"])  # never the held-out images
    for method in ("micle", "rotation"):
        out = cfg.out / "ssl" / method
        card = json.loads((out / "card.json").read_text())
        assert card["method"] == method and card["images"] == len(pool) and card["epochs"] == 2
        assert len(pd.read_csv(out / "history.csv")) == 2
        weights = load_file(str(out / "encoder.safetensors"))
        model = create_model("test_resnet", num_classes=2, pretrained=out / "encoder.safetensors")
        own = model.state_dict()
        assert all(torch.equal(own[k], v) for k, v in weights.items())  # every encoder tensor loaded
        assert not any(k.startswith(("head", "fc")) for k in weights)  # the pretext head is not exported
    mtime = (cfg.out / "ssl" / "micle" / "encoder.safetensors").stat().st_mtime_ns
    res = CliRunner().invoke(app, ["pretrain", str(path), "--method", "micle"])
    assert res.exit_code == 0 and (cfg.out / "ssl" / "micle" / "encoder.safetensors").stat().st_mtime_ns == mtime


def test_killed_pretraining_resumes_to_the_same_encoder(study, monkeypatch):
    from medlens.ssl import pretrain
    from medlens.stages.runner import build_pool
    from medlens.ssl import pretraining as module

    cfg, _ = study("full", epochs=3)
    build_pool(cfg)
    reference = load_file(str(pretrain(cfg, "simclr") / "encoder.safetensors"))

    cfg2, _ = study("killed", epochs=3)
    build_pool(cfg2)
    real, calls = module._loss, {"n": 0}
    steps = json.loads((cfg.out / "ssl" / "simclr" / "card.json").read_text())["images"] // 16

    def dies_in_epoch_two(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > steps + 1:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(module, "_loss", dies_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        pretrain(cfg2, "simclr")
    monkeypatch.setattr(module, "_loss", real)
    assert not (cfg2.out / "ssl" / "simclr" / "encoder.safetensors").exists()
    resumed = load_file(str(pretrain(cfg2, "simclr", resume=True) / "encoder.safetensors"))
    assert len(pd.read_csv(cfg2.out / "ssl" / "simclr" / "history.csv")) == 3
    assert all(torch.equal(reference[k], resumed[k]) for k in reference)


@pytest.mark.slow
def test_mae_vit_loss_falls_and_encoder_trains_in_medlens_train(study, tiny_config, tmp_path):
    cfg, path = study("mae", methods=["mae"], epochs=8, batch_size=32, lr=1e-3, decoder_dim=64,
                       decoder_depth=1, image_size=64)
    res = CliRunner().invoke(app, ["pretrain", str(path)])
    assert res.exit_code == 0, res.output
    hist = pd.read_csv(cfg.out / "ssl" / "mae" / "history.csv")
    print("MAE reconstruction loss per epoch:", hist["loss"].round(4).tolist())
    assert hist["loss"].iloc[-2:].mean() < 0.9 * hist["loss"].iloc[:2].mean()
    encoder = cfg.out / "ssl" / "mae" / "encoder.safetensors"
    card = json.loads((encoder.parent / "card.json").read_text())
    downstream = tiny_config(tmp_path, name="mae", model={**card["use"]["model"]},
                                  train={"epochs": 1, "image_size": 64}, engine={"device": "cpu"})
    down_path = tmp_path / "down.yaml"
    down_path.write_text(dump_config(downstream))
    res = CliRunner().invoke(app, ["train", str(down_path), "--fold", "0"])
    assert res.exit_code == 0, res.output
    start = create_model("vit_tiny_patch16_224", num_classes=2, pretrained=encoder, image_size=64).state_dict()
    weights = load_file(str(encoder))
    assert all(torch.equal(start[k], v) for k, v in weights.items())


@pytest.mark.slow
def test_torchrun_two_processes_gather_negatives(study):
    cfg, path = study("ddp", methods=["simclr"])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([str(TORCHRUN), "--standalone", "--nnodes", "1", "--nproc_per_node", "2",
                           "-m", "medlens.cli", "pretrain", str(path)], capture_output=True, text=True, timeout=300,
                          env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("simclr:") == 1  # rank 0 reports
    card = json.loads((cfg.out / "ssl" / "simclr" / "card.json").read_text())
    assert card["processes"] == 2
    create_model("test_resnet", num_classes=2, pretrained=cfg.out / "ssl" / "simclr" / "encoder.safetensors")


def test_probe_writes_curves_and_report_section(study):
    from medlens.stages.runner import run_study

    cfg, path = study("probe", methods=["simclr"])
    run_study(cfg)
    assert CliRunner().invoke(app, ["pretrain", str(path)]).exit_code == 0
    res = CliRunner().invoke(app, ["probe", str(path)])
    assert res.exit_code == 0, res.output
    table = pd.read_csv(cfg.out / "ssl" / "probe.csv")
    assert set(table["encoder"]) == {"random init", "simclr"}
    assert len(table) == 2 * 2 * 2  # encoders x fractions x draws
    assert ((table["low"] <= table["auc"]) & (table["auc"] <= table["high"])).all()
    summary = json.loads((cfg.out / "ssl" / "probe.json").read_text())
    assert set(summary["labels_saved"]) == {"simclr"}
    html = (cfg.out / "report.html").read_text()
    assert "label efficiency" in html.lower() and "simclr" in html
    bad = CliRunner().invoke(app, ["probe", str(path), "--encoder", "x=/nonexistent.safetensors"])
    assert bad.exit_code != 0


def test_probe_both_modes_compares_with_the_supervised_baseline(study):
    """--mode both: linear probes on every draw, fine-tunes on the first, and the DeLong comparison."""
    from medlens.stages.runner import prepare_study
    from medlens.ssl.probing import SUPERVISED

    cfg, path = study("both", methods=["simclr"], finetune_seeds=1, finetune_steps=6)
    prepare_study(cfg)
    assert CliRunner().invoke(app, ["pretrain", str(path)]).exit_code == 0
    res = CliRunner().invoke(app, ["probe", str(path), "--mode", "both"])
    assert res.exit_code == 0, res.output
    assert "labels saved vs the supervised baseline" in res.output
    table = pd.read_csv(cfg.out / "ssl" / "probe.csv")
    counts = table.groupby("mode").size().to_dict()
    assert counts == {"linear": 2 * 2 * 2, "finetune": 2 * 2 * 1}  # encoders x fractions x draws
    summary = json.loads((cfg.out / "ssl" / "probe.json").read_text())
    assert summary["mode"] == "both"
    assert set(summary["curves"]) == {"random init", "simclr", SUPERVISED, "simclr, fine-tuned"}
    assert summary["supervised"]["encoder"] == SUPERVISED and summary["supervised"]["fraction"] == 1.0
    sup_auc = table[(table["encoder"] == SUPERVISED) & (table["fraction"] == 1.0)]["auc"].mean()
    assert summary["supervised"]["auc"] == pytest.approx(sup_auc)
    assert set(summary["labels_saved_vs_supervised"]) == {"simclr", "simclr, fine-tuned"}
    vs = summary["versus_supervised"]
    assert [(c["encoder"], c["fraction"]) for c in vs] == [("simclr, fine-tuned", 0.5), ("simclr, fine-tuned", 1.0)]
    for c in vs:
        assert len(c["p"]) == 1 and 0.0 <= c["p_max"] <= 1.0
        assert c["difference"] == pytest.approx(c["auc"] - sup_auc)
    runs = sorted(p.parent.parent.name for p in (cfg.out / "ssl" / "finetune").glob("*/*/model.safetensors"))
    assert runs == ["random_init", "random_init", "simclr", "simclr"]  # one network per encoder and fine-tuned draw


def test_finetune_shares_must_be_probe_shares(tiny_config, tmp_path):
    with pytest.raises(Exception, match="finetune_fractions"):
        tiny_config(tmp_path, ssl={**SMALL, "finetune_fractions": [0.25]})
