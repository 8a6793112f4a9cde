"""DICOM ingest and PS3.15 Annex E de-identification (action table as data, with audit)."""

from medlens._lazy import lazy_exports

_WHERE = {
    "DeidContext": "deid", "DeidOptions": "deid", "burned_in_reason": "deid", "deidentify_dataset": "deid",
    "mask_pixels": "deid", "MANIFEST_COLUMNS": "ingest", "dataset_to_image": "ingest",
    "load_dicom_image": "ingest", "read_dicom_tree": "ingest", "DeidSummary": "tree", "deidentify_tree": "tree",
    "read_dicom_file": "reader", "verify_tree": "verify", "verify_dataset": "verify",
}
__all__ = sorted(_WHERE)
__getattr__ = lazy_exports(__name__, _WHERE)
