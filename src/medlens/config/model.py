"""``model:``: the classifier architecture and its local weights."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelConfig(_Strict):
    """The network (any timm classifier name)."""

    name: str = "resnet18"
    in_chans: Literal[1, 3] = 3
    pretrained: Path | None = Field(None, description="Local weights file; medlens never downloads weights.")
    drop_rate: float = Field(0.3, ge=0, lt=1, description="Dropout on the pooled features before the classifier, "
                             "trained, so that MC dropout (trust) samples a dropout the network learned with.")
