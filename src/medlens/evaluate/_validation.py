"""Input checks shared by the evaluate functions (private).

Every check raises :class:`medlens.errors.DataError` with a message that says what was
expected, what was found and what to do.
"""

from __future__ import annotations

import numpy as np

from medlens.errors import DataError


def _preview(values: np.ndarray, limit: int = 5) -> str:
    uniq = np.unique(values)
    shown = ", ".join(repr(v.item()) for v in uniq[:limit])
    return f"[{shown}{', ...' if uniq.size > limit else ''}]"


def as_array(values, *, name: str, ndim: tuple[int, ...] = (1,)) -> np.ndarray:
    """Return ``values`` as an array with one of the allowed dimensions."""
    arr = np.asarray(values)
    if arr.ndim not in ndim:
        allowed = " or ".join(f"{d}-D" for d in ndim)
        raise DataError(f"{name} must be a {allowed} array; got shape {arr.shape}.")
    if arr.shape[0] == 0:
        raise DataError(f"{name} is empty; pass at least one sample.")
    return arr


def check_length(n: int, arr: np.ndarray, *, name: str) -> None:
    """Raise when ``arr`` does not have ``n`` rows."""
    if arr.shape[0] != n:
        raise DataError(
            f"{name} has {arr.shape[0]} samples but y_true has {n}; pass one value per sample."
        )


def binary_labels(y_true, *, name: str = "y_true", ndim: tuple[int, ...] = (1,)) -> np.ndarray:
    """Return 0/1 labels as a boolean array (1 = positive)."""
    arr = as_array(y_true, name=name, ndim=ndim)
    if arr.dtype == bool:
        return arr
    if not np.issubdtype(arr.dtype, np.number):
        raise DataError(
            f"{name} must hold binary labels 0/1 (1 = positive); found {arr.dtype} values "
            f"{_preview(arr)}. Encode the positive class as 1."
        )
    ok = (arr == 0) | (arr == 1)
    if not np.all(ok):
        raise DataError(
            f"{name} must hold binary labels 0/1 (1 = positive); found values "
            f"{_preview(arr[~ok])}. Encode the positive class as 1 and the others as 0."
        )
    return arr.astype(bool)


def class_labels(y_true, *, name: str = "y_true") -> np.ndarray:
    """Return class indices 0..K-1 as an int64 array."""
    arr = as_array(y_true, name=name)
    if arr.dtype == bool:
        return arr.astype(np.int64)
    if not np.issubdtype(arr.dtype, np.number) or not np.all(np.isfinite(arr)):
        raise DataError(
            f"{name} must hold class indices 0..K-1; found {arr.dtype} values {_preview(arr)}."
        )
    as_int = arr.astype(np.int64)
    if np.any(as_int != arr) or np.any(as_int < 0):
        raise DataError(
            f"{name} must hold non-negative integer class indices 0..K-1; found values "
            f"{_preview(arr[(as_int != arr) | (as_int < 0)])}."
        )
    return as_int


def scores(y_score, n: int, *, name: str = "y_score", ndim: tuple[int, ...] = (1,)) -> np.ndarray:
    """Return finite float64 scores with ``n`` rows."""
    arr = as_array(y_score, name=name, ndim=ndim)
    check_length(n, arr, name=name)
    try:
        arr = arr.astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{name} must be numeric; got dtype {arr.dtype}.") from exc
    if not np.all(np.isfinite(arr)):
        bad = int(np.sum(~np.isfinite(arr)))
        raise DataError(f"{name} has {bad} NaN or infinite value(s); remove or impute them first.")
    return arr


def sample_weights(sample_weight, n: int) -> np.ndarray:
    """Return a (1, n) weight row: ones when ``sample_weight`` is None."""
    if sample_weight is None:
        return np.ones((1, n))
    w = scores(sample_weight, n, name="sample_weight")
    if np.any(w < 0):
        raise DataError("sample_weight must be non-negative.")
    return w[None, :]


def require_both_classes(y: np.ndarray, *, metric: str, name: str = "y_true") -> None:
    """Raise when the boolean labels ``y`` hold only one class."""
    n_pos = int(np.count_nonzero(y))
    if n_pos == 0 or n_pos == y.size:
        only = "positive (1)" if n_pos else "negative (0)"
        raise DataError(
            f"{metric} needs both positive and negative cases, but {name} has only "
            f"{only} labels ({y.size} samples). Evaluate on a set that contains both classes."
        )


def check_confidence(confidence: float) -> float:
    """Raise unless ``0 < confidence < 1``."""
    if not 0.0 < float(confidence) < 1.0:
        raise DataError(f"confidence must lie strictly between 0 and 1, e.g. 0.95; got {confidence}.")
    return float(confidence)
