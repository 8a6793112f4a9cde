"""The "threshold does not transfer" warning: a patient-level two-sample bootstrap of test minus validation."""

import numpy as np
import pandas as pd

from medlens.evaluate import binary_summary
from medlens.evaluate.study import _failures, transfer_check


def _frame(rng: np.random.Generator, n_patients: int, pos_mean: float, first_id: int = 0) -> pd.DataFrame:
    """Two images a patient; positives' scores centred at ``pos_mean``, negatives' at 0.3."""
    label = np.repeat(rng.random(n_patients) < 0.4, 2).astype(int)
    centre = np.where(label == 1, pos_mean, 0.3)
    score = np.clip(centre + rng.normal(0, 0.12, len(label)), 0, 1)
    return pd.DataFrame({"patient_id": np.repeat(np.arange(first_id, first_id + n_patients), 2).astype(str),
                         "label": label, "p0": 1 - score, "p1": score})


def test_it_fires_on_a_shifted_test_set_and_names_the_interval():
    rng = np.random.default_rng(0)
    val, test = _frame(rng, 120, 0.75), _frame(rng, 80, 0.52, first_id=1000)  # test positives score lower
    res = transfer_check(val, test, 0.5, "sensitivity", n_boot=500, seed=0)
    assert res["shifted"] and res["high"] < 0 and res["low"] <= res["value"] <= res["high"]
    point = {"name": "Youden", "method": "youden", "val": {"sensitivity": {"value": 0.97}},
             "test": {"sensitivity": {"value": 0.55}, "specificity": {"value": 0.96}, "transfer": res}}
    (msg,) = _failures([point], "Youden")
    assert "does not transfer to the internal test set" in msg and f"{res['low']:+.2f}" in msg


def test_it_stays_silent_on_exchangeable_splits():
    """Validation and test drawn from one population: the 95% test fires on about 1 split in 20."""
    fired = 0
    for seed in range(20):
        rng = np.random.default_rng(100 + seed)
        pool = _frame(rng, 200, 0.65)
        ids = pool["patient_id"].unique()
        test_ids = set(rng.choice(ids, 80, replace=False))
        held = pool["patient_id"].isin(test_ids)
        fired += transfer_check(pool[~held], pool[held], 0.5, "sensitivity", n_boot=400, seed=seed)["shifted"]
    assert fired <= 3


def test_a_small_test_set_no_longer_fires_on_its_own_sampling_error():
    """The old rule (test point estimate outside the validation CI) fired on half of 30 exchangeable draws
    with a 25-patient test set; the two-sample test counts the test set's own error too."""
    old = new = 0
    for seed in range(30):
        rng = np.random.default_rng(seed)
        val, test = _frame(rng, 300, 0.62), _frame(rng, 25, 0.62, first_id=1000)
        ci = binary_summary(val["label"], val["p1"], threshold=0.5, groups=val["patient_id"], n_boot=500,
                            seed=0)["sensitivity"].to_dict()
        pos = test["label"] == 1
        sens = float((test.loc[pos, "p1"] >= 0.5).mean())
        old += not ci["low"] <= sens <= ci["high"]
        new += transfer_check(val, test, 0.5, "sensitivity", n_boot=500, seed=0)["shifted"]
    assert old >= 10 and new <= 5, (old, new)
