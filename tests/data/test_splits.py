import numpy as np
import pandas as pd
import pytest

from medlens.data.splits import assign_groups, check_leakage, make_splits
from medlens.errors import DataError, LeakageError


def _manifest(n_patients=200, seed=0, sites=("A", "A", "B")) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        site = sites[p % len(sites)]
        sick = rng.uniform() < 0.35
        for i in range(int(rng.integers(1, 5))):
            rows.append({"sample_id": f"P{p}_{i}", "patient_id": f"P{p}", "site": site,
                         "label": int(sick and rng.uniform() < 0.8), "image": "x.png"})
    m = pd.DataFrame(rows)
    m["label"] = m["label"].astype("Int64")
    return m


def _patients(m, ids):
    return set(m.set_index("sample_id").loc[list(ids), "patient_id"])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_no_patient_in_two_parts_and_external_excluded(seed):
    m = _manifest(seed=seed)
    s = make_splits(m, folds=5, test_fraction=0.2, external_site="B", seed=seed)
    ext = set(m.loc[m["site"] == "B", "sample_id"])
    assert set(s["external"]) == ext
    for fold in s["folds"]:
        parts = [fold["train"], fold["val"], s["test"], s["external"]]
        pats = [_patients(m, p) for p in parts]
        for i in range(4):
            for j in range(i + 1, 4):
                assert not pats[i] & pats[j]
        assert not (set(fold["train"]) | set(fold["val"]) | set(s["test"])) & ext
    # every internal sample is in test or in exactly one validation fold
    vals = [x for f in s["folds"] for x in f["val"]]
    assert len(vals) == len(set(vals))
    assert set(vals) | set(s["test"]) == set(m.loc[m["site"] != "B", "sample_id"])
    check_leakage(m, s)


def test_stratification_within_five_percent():
    m = _manifest(n_patients=400, seed=5)
    s = make_splits(m, folds=5, test_fraction=0.2, external_site="B", seed=0)
    lab = m.set_index("sample_id")["label"]
    overall = lab.loc[m.loc[m["site"] != "B", "sample_id"]].mean()
    for ids in [s["test"]] + [f["val"] for f in s["folds"]] + [f["train"] for f in s["folds"]]:
        assert abs(lab.loc[ids].mean() - overall) <= 0.05


def test_fold_sizes_balanced_and_reproducible():
    m = _manifest(seed=3)
    a = make_splits(m, folds=4, test_fraction=0.25, external_site=None, seed=7)
    b = make_splits(m, folds=4, test_fraction=0.25, external_site=None, seed=7)
    c = make_splits(m, folds=4, test_fraction=0.25, external_site=None, seed=8)
    assert a == b and a != c
    sizes = [len(f["val"]) for f in a["folds"]]
    assert max(sizes) - min(sizes) <= 0.15 * np.mean(sizes)
    assert abs(len(a["test"]) / len(m) - 0.25) < 0.05


def test_leakage_check_catches_a_planted_leak():
    m = _manifest(seed=1)
    s = make_splits(m, folds=3, test_fraction=0.2, external_site="B", seed=0)
    # move one image of a test patient with several images into fold 0's training set
    pid_of = m.set_index("sample_id")["patient_id"]
    counts = pid_of.loc[s["test"]].value_counts()
    pid = counts.index[0]
    assert counts.iloc[0] >= 2
    victim = next(x for x in s["test"] if pid_of[x] == pid)
    s["test"].remove(victim)
    s["folds"][0]["train"].append(victim)
    with pytest.raises(LeakageError, match=f"fold 0: train/test share patient.*{pid}"):
        check_leakage(m, s)


def test_leakage_check_rejects_unknown_ids():
    m = _manifest(seed=1)
    s = make_splits(m, folds=2, test_fraction=0.2, external_site=None, seed=0)
    s["test"].append("nope")
    with pytest.raises(DataError, match="nope"):
        check_leakage(m, s)


def test_assign_groups_keeps_groups_together():
    labels = np.array([0, 1, 1, 0, 1, 0, 0, 1])
    groups = np.array(["a", "a", "b", "b", "c", "d", "d", "e"])
    part = assign_groups(labels, groups, [0.5, 0.5], seed=0)
    for g in np.unique(groups):
        assert len(set(part[groups == g])) == 1


def test_predefined_and_unlabeled_rows():
    m = _manifest(n_patients=30)
    m["split"] = np.where(np.arange(len(m)) % 5 == 0, "test", np.where(np.arange(len(m)) % 5 == 1, "val", "train"))
    m.loc[0, "label"] = pd.NA
    s = make_splits(m, folds=3, test_fraction=0.2, external_site=None, seed=0, strategy="predefined")
    assert len(s["folds"]) == 1 and "P0_0" not in s["test"] + s["folds"][0]["train"] + s["folds"][0]["val"]
    assert set(s["folds"][0]["val"]) == set(m.loc[(m["split"] == "val") & m["label"].notna(), "sample_id"])
    with pytest.raises(DataError, match="every labelled image"):
        make_splits(m.assign(site="B"), folds=3, test_fraction=0.2, external_site="B", seed=0)
    pooled = make_splits(m, folds=3, test_fraction=0.2, external_site=None, seed=0, strategy="predefined",
                         pool_val=True)
    dev = set(m.loc[m["split"].isin(["train", "val"]) & m["label"].notna(), "sample_id"])
    assert pooled["test"] == s["test"] and len(pooled["folds"]) == 3
    assert all(set(f["train"]) | set(f["val"]) == dev and not set(f["train"]) & set(f["val"]) for f in pooled["folds"])
    assert set().union(*(f["val"] for f in pooled["folds"])) == dev  # every development image validated once


def test_pool_val_needs_predefined():
    from medlens.config import SplitConfig

    with pytest.raises(ValueError, match="needs split.strategy 'predefined'"):
        SplitConfig(pool_val=True)


def test_temporal_split_tests_on_the_newest_patients():
    import pandas as pd

    from medlens.data.splits import make_splits

    n = 60
    m = pd.DataFrame({"sample_id": [f"s{i}" for i in range(n)], "patient_id": [f"p{i // 2}" for i in range(n)],
                      "site": "A", "label": [(i // 2) % 2 for i in range(n)], "image": "x",
                      "acquired": pd.to_datetime("2020-01-01") + pd.to_timedelta([(i // 2) * 10 for i in range(n)], "D")})
    s = make_splits(m, folds=3, test_fraction=0.2, external_site=None, seed=0, strategy="temporal")
    test = m[m["sample_id"].isin(s["test"])]
    dev = m[~m["sample_id"].isin(s["test"])]
    assert test["acquired"].min() > dev["acquired"].max()  # every test patient is newer than every training one
    assert test["patient_id"].nunique() == 6 and s["test_from"] == str(test["acquired"].min().date())
    with pytest.raises(DataError, match="needs acquisition dates"):
        make_splits(m.drop(columns="acquired"), folds=3, test_fraction=0.2, external_site=None, seed=0,
                    strategy="temporal")
