"""Helpers shared by the service tests (kept out of conftest.py so they import under a unique name)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

TOKEN = "test-token-0123456789abcdef"


def phantom_png(size: int = 64, seed: int = 0, **spec) -> bytes:
    """One phantom image (see medlens.data.synthetic.ImageSpec) as PNG bytes."""
    from medlens.data.synthetic import ImageSpec, render_image

    img, _, _ = render_image(ImageSpec(size, spec.pop("site", "A"), spec.pop("n_lesions", 0), **spec),
                             np.random.default_rng(seed))
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()
