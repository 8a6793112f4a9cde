"""A copy of a DRIVE-layout folder at another image size, with two images per patient.

Run: python benchmarks/resize_drive.py OUT [--root ../shared/data/drive] [--size 999x960]

Checks that the recipe of configs/drive.yaml adapts to the photograph rather than to DRIVE's
565 px: photographs are resized with bicubic, masks with linear interpolation thresholded at
one half; OUT/patients.csv pairs consecutive images of each part (21+22, 23+24, ...), so a
split that separated a patient's images would show. Then: python benchmarks/drive.py OUT.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from PIL import Image

HERE = Path(__file__).resolve().parent


def resize_copy(root: Path, out: Path, size: tuple[int, int]) -> Path:
    """Write the resized copy of ``root`` into ``out``; ``size`` is (width, height)."""
    rows = []
    for part in ("training", "testing"):
        for folder in sorted(p for p in (root / part).iterdir() if p.is_dir()):
            (out / part / folder.name).mkdir(parents=True, exist_ok=True)
            for f in sorted(folder.iterdir()):
                a = np.asarray(Image.open(f).convert("RGB" if folder.name == "images" else "L"))
                if folder.name == "images":
                    r = cv2.resize(a, size, interpolation=cv2.INTER_CUBIC)
                else:
                    r = (cv2.resize((a > 127).astype(np.float32), size, interpolation=cv2.INTER_LINEAR) > 0.5)
                    r = r.astype(np.uint8) * 255
                name = f.with_suffix(".png").name
                Image.fromarray(r).save(out / part / folder.name / name)
                if folder.name == "images":
                    key = int(f.name.split("_")[0])
                    rows.append({"file": name, "patient_id": f"{part}-{(key - 1) // 2}"})
    pd.DataFrame(rows).to_csv(out / "patients.csv", index=False)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--root", type=Path, default=HERE.parent.parent / "shared" / "data" / "drive")
    ap.add_argument("--size", default="999x960", help="width x height")
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.lower().split("x"))
    print(resize_copy(args.root, args.out, (w, h)))


if __name__ == "__main__":
    main()
