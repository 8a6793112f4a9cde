import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from medlens.config import StudyConfig, load_config, parse_config
from medlens.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_demo_yaml_is_the_defaults_and_the_declared_demo_departures():
    from medlens.config import demo_config

    demo = load_config(REPO / "configs" / "demo.yaml")
    assert demo == demo_config()
    # everything else is the default: only the fields of DEMO differ
    assert demo.model_copy(update={"data": StudyConfig().data, "engine": StudyConfig().engine,
                                   "evaluate": StudyConfig().evaluate}) == StudyConfig()
    assert demo.data.model_copy(update={"synthetic": StudyConfig().data.synthetic}) == StudyConfig().data


@pytest.mark.parametrize(
    "data, match",
    [
        ({"trian": {"epochs": 3}}, r"unknown field 'trian'\. Did you mean 'train'\?"),
        ({"train": {"epoch": 3}}, r"unknown field 'train\.epoch'\. Did you mean 'epochs'\?"),
        ({"train": {"epochs": 0}}, r"field 'train\.epochs': Input should be greater than or equal to 1"),
        ({"data": {"source": "medmnist"}}, r"data\.path is required"),
        ({"model": {"in_chans": 2}}, r"field 'model\.in_chans'"),
        ({"split": {"folds": "many"}}, r"field 'split\.folds'"),
    ],
)
def test_invalid_configs_name_the_field(data, match):
    with pytest.raises(ConfigError, match=match):
        parse_config(data)


def test_load_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "none.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(tmp_path / "list.yaml")
    (tmp_path / "bad.yaml").write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")


def _medlens(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "medlens.cli", *args], capture_output=True, text=True, cwd=cwd)


def test_cli_typo_in_config_exits_2_with_one_line(tmp_path):
    cfg = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    cfg["train"]["learning_rate"] = cfg["train"].pop("lr")
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(cfg))
    r = _medlens("run", str(path), cwd=tmp_path)
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "train.learning_rate" in lines[0] and "Traceback" not in r.stderr
    assert not (tmp_path / "runs").exists()  # nothing half-written


def test_cli_help_lists_commands():
    r = _medlens("--help")
    assert r.returncode == 0
    for cmd in ("synth", "ingest", "split", "run", "demo", "compare", "deid", "qc", "pretrain", "probe"):
        assert cmd in r.stdout
