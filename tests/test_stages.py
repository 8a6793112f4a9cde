"""The stage protocol: a new stage is one module, one config section and one line; outputs drive re-runs."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import pandas as pd
import pytest
from pydantic import BaseModel, ConfigDict
from typer.testing import CliRunner

from medlens.errors import DataError, StageInputMissing


def _stamps(run: Path) -> dict[str, int]:
    return {p.stem: p.stat().st_mtime_ns for p in (run / ".stages").iterdir()}


def _ran(before: dict[str, int], after: dict[str, int]) -> list[str]:
    return sorted(k for k in after if before.get(k) != after[k])


def test_a_toy_stage_is_one_module_one_section_and_one_line(tmp_path, monkeypatch):
    import sys

    import medlens.config.study as study
    from medlens.cli import app
    from medlens.stages import runner

    # 1. one stage module
    (tmp_path / "toy_stage.py").write_text(textwrap.dedent('''
        import json
        import pandas as pd
        from medlens.stages.protocol import Stage

        def run(run_dir, cfg):
            qc = pd.read_parquet(run_dir / "qc.parquet")
            (run_dir / "toy").mkdir(exist_ok=True)
            (run_dir / "toy" / "count.json").write_text(json.dumps({cfg.toy.word: int(qc["passed"].sum())}))

        STAGE = Stage("toy", run, sections=("toy",), reads=("qc.parquet",), writes=("toy/count.json",))
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    import toy_stage

    # 2. one config section
    class ToyConfig(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)
        word: str = "passed"

    class ToyStudy(study.StudyConfig):
        toy: ToyConfig = ToyConfig()

    monkeypatch.setattr(study, "StudyConfig", ToyStudy)
    # 3. one line in the task's stage list
    monkeypatch.setitem(runner.TASKS, "classification", (*runner.DATA, toy_stage.STAGE))

    config = tmp_path / "toy.yaml"
    config.write_text(f"name: toy\nrun_dir: {tmp_path / 'runs'}\ndata: {{synthetic: {{n_patients: 30, image_size: 32}}}}\n"
                      "toy: {word: kept}\n")
    result = CliRunner().invoke(app, ["run", str(config)])
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / "toy"
    qc = pd.read_parquet(run / "qc.parquet")
    assert json.loads((run / "toy" / "count.json").read_text()) == {"kept": int(qc["passed"].sum())}
    before = _stamps(run)
    config.write_text(config.read_text().replace("word: kept", "word: counted"))  # its section changed: it alone
    assert CliRunner().invoke(app, ["run", str(config)]).exit_code == 0
    assert _ran(before, _stamps(run)) == ["toy"]
    assert "counted" in json.loads((run / "toy" / "count.json").read_text())
    del sys.modules["toy_stage"]


@pytest.fixture
def own_run(tiny_run, tmp_path, tiny_config):
    """A copy of the finished tiny study that a test may change, with its config."""
    shutil.copytree(tiny_run, tmp_path / tiny_run.name, symlinks=True)
    return tiny_config(tmp_path)


def test_deleted_output_reruns_its_stage_and_what_reads_it(own_run):
    from medlens.stages.runner import run_study

    run = own_run.out
    before = _stamps(run)
    run_study(own_run)
    assert _ran(before, _stamps(run)) == [], "a copied finished run is up to date"

    summary = (run / "explain" / "summary.json").read_bytes()
    (run / "explain" / "summary.json").unlink()
    run_study(own_run)
    after = _stamps(run)
    # explain is deterministic: the re-made summary is byte-identical, so the report that reads it stays up to date
    assert (run / "explain" / "summary.json").read_bytes() == summary
    assert _ran(before, after) == ["explain"]

    splits = (run / "splits.json").read_bytes()
    (run / "splits.json").unlink()
    run_study(own_run)
    assert (run / "splits.json").read_bytes() == splits  # made again and verified: the same split
    assert _ran(after, _stamps(run)) == ["split"]

    # a changed input re-runs every stage that reads it, and only those
    metrics = json.loads((run / "metrics.json").read_text())
    (run / "metrics.json").write_text(json.dumps({**metrics, "note": "edited"}))
    before = _stamps(run)
    run_study(own_run)
    assert _ran(before, _stamps(run)) == ["export", "report"]
    # ... and evaluate re-made nothing: metrics.json was an input of those two only
    assert "note" in json.loads((run / "metrics.json").read_text())


def test_a_changed_split_is_an_error_not_a_silent_rewrite(own_run):
    from medlens.stages.runner import run_study

    cfg = own_run.model_copy(update={"split": own_run.split.model_copy(update={"test_fraction": 0.35})})
    old = (cfg.out / "splits.json").read_bytes()
    with pytest.raises(DataError, match=r"different split.*new `name:`"):
        run_study(cfg)
    assert (cfg.out / "splits.json").read_bytes() == old


def test_a_stage_without_its_input_names_the_stage_that_writes_it(tmp_path, tiny_config):
    from medlens.stages.runner import run_named

    cfg = tiny_config(tmp_path)
    with pytest.raises(StageInputMissing, match=r"stage explain needs .*predictions\.parquet, which the evaluate "
                                                r"stage writes; run `medlens run CONFIG`"):
        run_named(cfg, "explain")
