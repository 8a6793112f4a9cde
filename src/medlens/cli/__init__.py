"""Command line: thin wrappers that parse, load the config and call one function each.

Every :class:`~medlens.errors.MedlensError` is printed on one line (no traceback) and the
process exits with status 2; unexpected errors keep their traceback. The longer commands live in
the modules of this package (``medlens.cli.train``, ``medlens.cli.dicom``, ...), imported here
without importing torch: their heavy imports stay inside the command functions.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.logging import RichHandler

from medlens.cli import ssl as ssl_cli
from medlens.cli import train as train_cli
from medlens.cli.dicom import deid as deid_cmd
from medlens.cli.explain import explain as explain_cmd
from medlens.cli.export import export as export_cmd
from medlens.cli.qc import qc as qc_cmd
from medlens.cli.serve import serve as serve_cmd
from medlens.cli.trust import audit as audit_cmd
from medlens.errors import DataError, MedlensError

app = typer.Typer(
    help="medlens: run an honest medical-image AI study offline — ingest, split by patient, train, "
    "evaluate with confidence intervals, report.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="markdown",  # docstrings are reflowed paragraphs, not hard-wrapped lines
)
err_console = Console(stderr=True)


@app.callback()
def _setup(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log every stage decision.")] = False) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s",
                        handlers=[RichHandler(console=err_console, show_path=False)], force=True)
    logging.captureWarnings(True)  # e.g. undefined bootstrap replicates: one log line, not a warning dump
    stages = logging.getLogger("medlens.stages")
    stages.handlers.clear()
    stages.propagate = True
    if not err_console.is_terminal:  # a pipe, a log file, a batch scheduler: no progress bars, so a line per stage
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        stages.addHandler(handler)
        stages.setLevel(logging.INFO)
        stages.propagate = False


@app.command()
def synth(
    out: Annotated[Path, typer.Option(help="Folder to write images/, masks/ and manifest.csv into.")],
    patients: Annotated[int, typer.Option(help="Number of simulated patients (2-4 images each).")] = 150,
    seed: Annotated[int, typer.Option(help="Same seed, byte-identical output.")] = 0,
    size: Annotated[int, typer.Option(help="Image side in pixels.")] = 96,
    qc_defects: Annotated[float, typer.Option(help="Fraction of images with a planted QC defect.")] = 0.0,
    ood: Annotated[int, typer.Option(help="Number of extra out-of-distribution images (no fundus).")] = 0,
    shortcut: Annotated[bool, typer.Option(help="Plant a corner marker correlated with the label.")] = False,
) -> None:
    """Write the deterministic fundus-like phantom (the embedded default data set)."""
    from medlens.data.synthetic import generate

    m = generate(out, n_patients=patients, seed=seed, image_size=size, qc_defect_rate=qc_defects,
                 ood_images=ood, shortcut=shortcut)
    typer.echo(f"wrote {len(m)} images of {m['patient_id'].nunique()} patients to {out}")


@app.command()
def init(
    path: Annotated[Path, typer.Argument(help="Your data: a folder with one sub-folder of images per class, a CSV/Parquet table (image, label[, patient_id, site] columns) or a MedMNIST .npz.")],
    out: Annotated[Optional[Path], typer.Option(help="Study YAML to write (default: `<name>.yaml` here).")] = None,
    name: Annotated[Optional[str], typer.Option(help="Study name (the run goes to `runs/<name>`); default: from PATH.")] = None,
) -> None:
    """Look at your data and write a study YAML that `medlens run` accepts as it is; print what was found."""
    from medlens.data.detect import study_yaml

    text, summary = study_yaml(path, name)
    target = out or Path(f"{summary['name']}.yaml")
    if target.exists():
        raise DataError(f"{target} exists; pass --out to write elsewhere (medlens init never overwrites)")
    target.write_text(text)
    ipp = summary["images_per_patient"]
    typer.echo(f"{summary['images']} images, {summary['patients']} patients "
               f"(images per patient: min {ipp['min']}, median {ipp['median']:g}, max {ipp['max']})")
    typer.echo("classes: " + ", ".join(f"{k} {v}" for k, v in summary["classes"].items()))
    typer.echo("sites: " + ", ".join(f"{k} {v}" for k, v in summary["sites"].items()))
    typer.echo(f"patient IDs: {summary['patient_ids']}")
    if summary.get("fundus_like"):
        typer.echo("fundus-like images: the study crops to the field of view and applies CLAHE on L of LAB")
    if "privacy" in summary:
        typer.echo(f"privacy: {summary['privacy']}")
    typer.echo(f"wrote {target}; next: medlens run {target}")


@app.command()
def ingest(
    path: Annotated[Path, typer.Argument(help="Input: phantom folder, MedMNIST .npz, image folder, CSV or de-identified DICOM folder.")],
    source: Annotated[str, typer.Option(help="synthetic | medmnist | imagefolder | csv | dicom (de-identified by `medlens deid` first)")] = "synthetic",
    out: Annotated[Path, typer.Option(help="Manifest to write.")] = Path("manifest.parquet"),
    skip_bad: Annotated[bool, typer.Option(help="Skip unreadable images (logged) instead of stopping.")] = False,
) -> None:
    """Read a data source into a Manifest (parquet, one row per image)."""
    from medlens.config import parse_config
    from medlens.data import sources
    from medlens.data.manifest import save_manifest

    if source == "synthetic":
        manifest = sources.read_synthetic(path)
    elif source == "dicom":
        manifest = sources.read_dicom(path)
    else:
        cfg = parse_config({"data": {"source": source, "path": str(path), "on_error": "skip" if skip_bad else "raise"}},
                           source="command line")
        manifest = sources.read_source(cfg.data, path)
    save_manifest(manifest, out)
    typer.echo(f"wrote {out}: {len(manifest)} images, {manifest['patient_id'].nunique()} patients")


@app.command()
def split(
    manifest: Annotated[Path, typer.Argument(help="manifest.parquet from `medlens ingest`.")],
    out: Annotated[Path, typer.Option(help="splits.json to write.")] = Path("splits.json"),
    folds: Annotated[int, typer.Option(help="Number of cross-validation folds.")] = 3,
    test_fraction: Annotated[float, typer.Option(help="Share of internal patients held out for testing.")] = 0.2,
    external_site: Annotated[Optional[str], typer.Option(help="Site held out entirely as external validation.")] = None,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Patient-grouped, label-stratified k-fold with a held-out test set; checks for leakage."""
    from medlens.data.manifest import load_manifest
    from medlens.data.splits import check_leakage, make_splits, save_splits

    m = load_manifest(manifest)
    s = make_splits(m, folds=folds, test_fraction=test_fraction, external_site=external_site, seed=seed)
    check_leakage(m, s)
    save_splits(s, out)
    typer.echo(f"wrote {out}: {folds} folds, {len(s['test'])} test, {len(s['external'])} external images")


@app.command()
def run(config: Annotated[Path, typer.Argument(help="Study YAML (see configs/demo.yaml).")]) -> None:
    """Run a whole study: ingest, split, train every fold, evaluate, report. Completed stages are skipped."""
    from medlens.config import load_config

    _run(load_config(config))


@app.command()
def demo(run_dir: Annotated[Path, typer.Option(help="Where `runs/<name>` goes.")] = Path("runs")) -> None:
    """Run the bundled demo study (configs/demo.yaml: the synthetic phantom, 3 folds repeated 3 times, resnet18 at 64 px)."""
    from medlens.config import demo_config

    _run(demo_config(run_dir=run_dir))


@app.command()
def compare(
    run_a: Annotated[Path, typer.Argument(help="First finished run directory (e.g. runs/demo).")],
    run_b: Annotated[Path, typer.Argument(help="Second finished run directory, same test set.")],
    out: Annotated[Optional[Path], typer.Option(help="Also write the comparison as JSON here.")] = None,
) -> None:
    """Compare two runs on the same test set: DeLong paired test of AUCs, McNemar, heat-map agreement.

    Runs with evaluate.repeats >= 3 each also get the corrected resampled t-test (Nadeau & Bengio
    2003) on their per-repeat test AUCs, beside DeLong on the shipped ensembles.

    McNemar uses each run's operating point; when both runs were explained, the agreement of their
    heat maps with the expert's region is compared with a paired Wilcoxon test. Runs with different
    test sets are refused (exit 2).
    """
    import json

    from rich.table import Table

    from medlens.evaluate.compare import compare_runs

    res = compare_runs(run_a, run_b)
    table = Table(title=f"{run_a} vs {run_b} ({res['n_images']} test images)")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    for key in ("auc_a", "auc_b", "difference", "z", "p", "mcnemar_statistic", "mcnemar_p"):
        if key in res:
            table.add_row({"p": "DeLong p-value", "z": "DeLong z"}.get(key, key), f"{res[key]:.4g}")
    if "corrected_ttest" in res:
        tt = res["corrected_ttest"]
        table.add_row(f"mean AUC difference over {tt['repeats']} repeats", f"{tt['mean_difference']:.4g}")
        table.add_row(f"corrected resampled t (df {tt['df']})", f"{tt['t']:.4g}")
        table.add_row("corrected t-test p-value", f"{tt['p']:.4g}")
    Console().print(table)
    if (run_a / "explain" / "summary.json").is_file() and (run_b / "explain" / "summary.json").is_file():
        from medlens.explain import agreement_comparison

        res["rationale"] = agreement_comparison(run_a, run_b)
        typer.echo(f"rationale (energy pointing in the expert ROI, Wilcoxon): {res['rationale']['message']}")
    if out is not None:
        out.write_text(json.dumps(res, indent=1, default=float))


# Commands implemented in their own modules of this package (medlens.cli.<name>).
app.command("deid")(deid_cmd)
app.command("qc")(qc_cmd)
app.command("train")(train_cli.train)
app.command("tune")(train_cli.tune)
app.command("pretrain")(ssl_cli.pretrain)
app.command("probe")(ssl_cli.probe)
app.command("explain")(explain_cmd)
app.command("audit")(audit_cmd)
app.command("export")(export_cmd)
app.command("serve")(serve_cmd)


def _run(cfg) -> None:
    import json

    from medlens.stages.runner import run_study

    out = run_study(cfg)
    if cfg.task == "segmentation":
        from medlens.cli.seg import print_summary

        print_summary(out)
    elif cfg.task == "detection":
        m = json.loads((out / "det" / "metrics.json").read_text())
        for name in ("test", "external"):
            for method, s in m.get(name, {}).items():
                c, op = s["cpm"], s["operating_point"]
                typer.echo(f"{name:9s} {method:12s} CPM {c['value']:.3f} (95% CI {c['low']:.3f}-{c['high']:.3f}), "
                           f"sensitivity {op['sensitivity']['value']:.3f} at {op['fp_per_image']['value']:.2f} FP/image")
    elif cfg.engine.task != "classification":
        typer.echo(f"engine.task {cfg.engine.task}: folds trained, predictions in {out}/fold_*/predictions.parquet "
                   "(evaluation, explain, trust and the report cover classification studies)")
    elif (out / "metrics.json").is_file():
        m = json.loads((out / "metrics.json").read_text())
        for name in ("test", "external"):
            if name in m:
                auc = m[name]["auc"]
                typer.echo(f"{name:9s} AUC {auc['value']:.3f} (95% CI {auc['low']:.3f}-{auc['high']:.3f})")
    if (out / "report.html").is_file():
        typer.echo(f"report: {out / 'report.html'}")


def main() -> None:
    """Console entry point: one-line errors, exit status 2."""
    try:
        app()
    except MedlensError as err:
        err_console.print("[bold red]error:[/]", escape(str(err)), highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
