"""The pretext tasks: views, MICLe partners, the NT-Xent loss, rotation and the masked autoencoder.

All randomness comes from a :class:`torch.Generator` (or a NumPy generator for the MICLe
partners) that the caller seeds per step, so a resumed run draws the same numbers.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medlens.data.arrays import MEAN, STD
from medlens.errors import ConfigError


def micle_partners(patient_ids, rng: np.random.Generator) -> np.ndarray:
    """For each image, the index of another image of the same patient (MICLe positives).

    Azizi et al. (2021) pair *different* images of one patient; a patient with a single
    image is paired with itself (two augmentations of one image, as in SimCLR).

    Parameters
    ----------
    patient_ids : array-like of shape (n,)
    rng : numpy.random.Generator

    Returns
    -------
    ndarray of int, shape (n,)
        ``partner[i] != i`` and ``patient_ids[partner[i]] == patient_ids[i]`` whenever the
        patient has at least two images.
    """
    codes = np.unique(np.asarray(patient_ids), return_inverse=True)[1]
    order = np.argsort(codes, kind="stable")
    sizes = np.bincount(codes)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    g = codes[order]
    m, s = sizes[g], starts[g]
    pos = np.arange(len(order)) - s  # position of each sorted image inside its patient
    shift = 1 + np.floor(rng.random(len(order)) * np.maximum(m - 1, 1)).astype(int)  # 1..m-1
    partner_sorted = np.where(m > 1, s + (pos + shift) % m, np.arange(len(order)))
    out = np.empty(len(order), int)
    out[order] = order[partner_sorted]
    return out


def random_views(x: torch.Tensor, gen: torch.Generator, *, crop_scale: float, rotation: float = 15.0,
                 colour: float = 0.3, grey_prob: float = 0.2) -> torch.Tensor:
    """One random view per image of a uint8 batch ``N×C×H×W``, normalised for the network.

    Random resized crop (area ``crop_scale``–1, aspect 3/4–4/3), horizontal and vertical
    flips and a small rotation in one resampling, then per-channel gain, brightness and
    contrast jitter and (3-channel images) random conversion to grey.
    """
    n, c = x.shape[:2]
    img = x.float() / 255.0
    u = torch.rand(n, 8, generator=gen).to(x.device)
    area = crop_scale + (1 - crop_scale) * u[:, 0]
    aspect = torch.exp((u[:, 1] * 2 - 1) * math.log(4 / 3))
    sx = torch.sqrt(area * aspect).clamp(max=1.0)
    sy = torch.sqrt(area / aspect).clamp(max=1.0)
    tx, ty = (u[:, 2] * 2 - 1) * (1 - sx), (u[:, 3] * 2 - 1) * (1 - sy)
    sx = torch.where(u[:, 4] < 0.5, -sx, sx)
    sy = torch.where(u[:, 5] < 0.5, -sy, sy)
    rad = (u[:, 6] * 2 - 1) * rotation * math.pi / 180
    cos, sin = torch.cos(rad), torch.sin(rad)
    theta = torch.stack([torch.stack([sx * cos, -sy * sin, tx], 1), torch.stack([sx * sin, sy * cos, ty], 1)], 1)
    grid = F.affine_grid(theta, list(img.shape), align_corners=False)
    img = F.grid_sample(img, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    j = torch.rand(n, c + 2, generator=gen).to(x.device) * 2 - 1
    img = img * (1 + 0.5 * colour * j[:, :c, None, None])  # per-channel gain (colour cast)
    mean = img.mean((1, 2, 3), keepdim=True)
    img = (img - mean) * (1 + colour * j[:, c, None, None, None]) + mean  # contrast
    img = img + 0.3 * colour * j[:, c + 1, None, None, None]  # brightness
    if c == 3 and grey_prob > 0:
        grey = (u[:, 7] < grey_prob)[:, None, None, None]
        img = torch.where(grey, img.mean(1, keepdim=True).expand_as(img), img)
    return (img.clamp(0, 1) - MEAN) / STD


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's normalised temperature-scaled cross-entropy for positive pairs ``(z1[i], z2[i])``.

    Under ``torchrun`` the embeddings of every rank are gathered (with gradients), so each
    anchor is contrasted with ``2 × batch × world − 2`` negatives; every rank must pass the
    same batch size.
    """
    import torch.distributed as dist

    z1, z2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
    n, rank, world = len(z1), 0, 1
    all1, all2 = z1, z2
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        from torch.distributed.nn.functional import all_gather

        rank, world = dist.get_rank(), dist.get_world_size()
        all1, all2 = torch.cat(all_gather(z1)), torch.cat(all_gather(z2))
    bank = torch.cat([all1, all2])  # 2·n·world candidates
    idx = rank * n + torch.arange(n, device=z1.device)
    total = n * world
    logits = torch.cat([z1, z2]) @ bank.T / temperature
    self_cols = torch.cat([idx, idx + total])
    logits[torch.arange(2 * n, device=z1.device), self_cols] = float("-inf")
    targets = torch.cat([idx + total, idx])
    return F.cross_entropy(logits, targets)


class Projected(nn.Module):
    """Encoder + MLP projection head (SimCLR, MICLe); the head is dropped after pretraining."""

    def __init__(self, encoder: nn.Module, dim: int) -> None:
        super().__init__()
        width = int(encoder.num_features)
        self.encoder = encoder
        self.head = nn.Sequential(nn.Linear(width, width), nn.ReLU(inplace=True), nn.Linear(width, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


class RotationNet(nn.Module):
    """Encoder + linear head predicting which of 0/90/180/270 degrees the image was turned."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(int(encoder.num_features), 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


def rotate_quarters(x: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Turn each image by a random multiple of 90 degrees; returns the batch and the multiples."""
    k = torch.randint(0, 4, (len(x),), generator=gen).to(x.device)
    out = x.clone()
    for q in range(1, 4):
        sel = k == q
        if sel.any():
            out[sel] = torch.rot90(x[sel], q, dims=(2, 3))
    return out, k


class MAE(nn.Module):
    """Masked autoencoder (He et al., 2022) around a timm ``VisionTransformer`` encoder.

    The encoder sees only the visible patches (plus its class token); a light transformer
    decoder fills in the masked ones and the loss is the mean squared error of the masked
    patches' pixels, each patch normalised by its own mean and variance. After pretraining
    ``encoder.state_dict()`` is an ordinary timm ViT checkpoint.
    """

    def __init__(self, encoder: nn.Module, *, mask_ratio: float, decoder_dim: int, decoder_depth: int) -> None:
        super().__init__()
        from timm.models.vision_transformer import Block, VisionTransformer

        if not isinstance(encoder, VisionTransformer) or getattr(encoder, "no_embed_class", False) \
                or getattr(encoder, "reg_token", None) is not None or getattr(encoder, "dynamic_img_size", False):
            raise ConfigError("ssl.vit: mae needs a plain timm VisionTransformer (class token, absolute position "
                              f"embedding), got {type(encoder).__name__}")
        self.encoder, self.mask_ratio = encoder, mask_ratio
        pe = encoder.patch_embed
        self.patch = int(pe.patch_size[0])
        self.num_patches = int(pe.num_patches)
        self.in_chans = int(pe.proj.in_channels)
        heads = max(1, decoder_dim // 32)
        self.decoder_embed = nn.Linear(encoder.embed_dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.decoder_pos = nn.Parameter(torch.zeros(1, self.num_patches, decoder_dim))
        self.decoder = nn.Sequential(*[Block(decoder_dim, heads, mlp_ratio=4.0, qkv_bias=True)
                                       for _ in range(decoder_depth)])
        self.decoder_norm = nn.LayerNorm(decoder_dim)
        self.decoder_pred = nn.Linear(decoder_dim, self.patch ** 2 * self.in_chans)
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        nn.init.trunc_normal_(self.decoder_pos, std=0.02)

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """``N×C×H×W`` -> ``N×L×(p·p·C)`` in the patch order of the encoder."""
        n, c, h, w = x.shape
        p = self.patch
        x = x.reshape(n, c, h // p, p, w // p, p)
        return torch.einsum("nchpwq->nhwpqc", x).reshape(n, (h // p) * (w // p), p * p * c)

    def forward(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """The reconstruction loss of one batch (normalised network input ``x``)."""
        enc = self.encoder
        n, L = len(x), self.num_patches
        keep = max(1, int(round(L * (1 - self.mask_ratio))))
        tokens = enc.patch_embed(x) + enc.pos_embed[:, 1:]
        shuffle = torch.argsort(torch.rand(n, L, generator=gen).to(x.device), dim=1)
        restore = torch.argsort(shuffle, dim=1)
        visible = torch.gather(tokens, 1, shuffle[:, :keep, None].expand(-1, -1, tokens.shape[2]))
        cls = (enc.cls_token + enc.pos_embed[:, :1]).expand(n, -1, -1)
        h = enc.norm(enc.blocks(enc.norm_pre(torch.cat([cls, visible], 1))))
        d = self.decoder_embed(h)[:, 1:]
        d = torch.cat([d, self.mask_token.expand(n, L - keep, -1)], 1)
        d = torch.gather(d, 1, restore[:, :, None].expand(-1, -1, d.shape[2])) + self.decoder_pos
        pred = self.decoder_pred(self.decoder_norm(self.decoder(d)))
        target = self.patchify(x)
        target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6).sqrt()
        mask = torch.ones(n, L, device=x.device)
        mask[:, :keep] = 0
        mask = torch.gather(mask, 1, restore)
        return (((pred - target) ** 2).mean(-1) * mask).sum() / mask.sum()
