"""DICOM ingest and PS3.15 Annex E de-identification (action table as data, with audit)."""

from medlens.dicom.deid import DeidContext, DeidOptions, burned_in_reason, deidentify_dataset, mask_pixels
from medlens.dicom.ingest import MANIFEST_COLUMNS, dataset_to_image, load_dicom_image, read_dicom_tree
from medlens.dicom.tree import DeidSummary, deidentify_tree, read_dicom_file, verify_dataset, verify_tree

__all__ = [
    "MANIFEST_COLUMNS",
    "DeidContext",
    "DeidOptions",
    "DeidSummary",
    "burned_in_reason",
    "dataset_to_image",
    "deidentify_dataset",
    "deidentify_tree",
    "load_dicom_image",
    "mask_pixels",
    "read_dicom_file",
    "read_dicom_tree",
    "verify_dataset",
    "verify_tree",
]
