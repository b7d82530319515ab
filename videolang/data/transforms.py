"""Clip transforms on uint8 tensors [T, H, W, 3]: one crop/flip decision per clip, applied to every frame.

Transforms return `(frames, caption)` because a horizontal flip changes the meaning of captions that
name directions ("moves left"): `RandomFlip` swaps such words so the pair stays true, or can be left
out for corpora where that is not enough.
"""

from __future__ import annotations

import random
import re
from typing import Sequence

import torch
import torch.nn.functional as F

# CLIP's preprocessing statistics, the default of CLIPVisionModel towers.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

_MIRROR = {"left": "right", "right": "left", "leftward": "rightward", "rightward": "leftward",
           "leftwards": "rightwards", "rightwards": "leftwards", "clockwise": "counterclockwise",
           "counterclockwise": "clockwise", "anticlockwise": "clockwise"}
_MIRROR_RE = re.compile(r"\b(" + "|".join(sorted(_MIRROR, key=len, reverse=True)) + r")\b", re.IGNORECASE)


def mirror_caption(caption: str) -> str:
    """Swap left/right words so a horizontally flipped clip keeps a true caption."""

    def swap(m: re.Match) -> str:
        word = m.group(0)
        out = _MIRROR[word.lower()]
        return out.capitalize() if word[0].isupper() else out

    return _MIRROR_RE.sub(swap, caption)


def resize_frames(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 [T, H, W, 3] -> uint8 [T, h, w, 3], bilinear with antialiasing."""
    if tuple(frames.shape[1:3]) == tuple(size):
        return frames
    x = frames.permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    return x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


class Resize:
    def __init__(self, size: tuple[int, int]):
        self.size = tuple(size)

    def __call__(self, frames: torch.Tensor, caption: str, rng: random.Random) -> tuple[torch.Tensor, str]:
        return resize_frames(frames, self.size), caption


class RandomResizedCrop:
    """Crop a random area fraction `scale` with aspect ratio in `ratio`, same box for every frame."""

    def __init__(self, size: tuple[int, int], scale=(0.5, 1.0), ratio=(3 / 4, 4 / 3)):
        self.size, self.scale, self.ratio = tuple(size), scale, ratio

    def __call__(self, frames: torch.Tensor, caption: str, rng: random.Random) -> tuple[torch.Tensor, str]:
        _, h, w, _ = frames.shape
        for _ in range(10):
            area = h * w * rng.uniform(*self.scale)
            aspect = rng.uniform(*self.ratio)
            ch, cw = round((area / aspect) ** 0.5), round((area * aspect) ** 0.5)
            if 0 < ch <= h and 0 < cw <= w:
                top, left = rng.randint(0, h - ch), rng.randint(0, w - cw)
                return resize_frames(frames[:, top : top + ch, left : left + cw], self.size), caption
        return resize_frames(frames, self.size), caption  # fall back to the whole frame


class RandomFlip:
    """Horizontal flip with probability `p`; captions are mirrored (left <-> right) when flipped."""

    def __init__(self, p: float = 0.5, mirror_text: bool = True):
        self.p, self.mirror_text = p, mirror_text

    def __call__(self, frames: torch.Tensor, caption: str, rng: random.Random) -> tuple[torch.Tensor, str]:
        if rng.random() >= self.p:
            return frames, caption
        return frames.flip(2), (mirror_caption(caption) if self.mirror_text else caption)


class Compose:
    def __init__(self, transforms: Sequence):
        self.transforms = list(transforms)

    def __call__(self, frames: torch.Tensor, caption: str, rng: random.Random) -> tuple[torch.Tensor, str]:
        for t in self.transforms:
            frames, caption = t(frames, caption, rng)
        return frames, caption


def normalize(frames: torch.Tensor, mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD) -> torch.Tensor:
    """uint8 [..., H, W, 3] -> float [..., 3, H, W] scaled to [0, 1] and standardised per channel.

    Kept out of the dataset by default: shipping uint8 to the model is 4x less host memory and
    transfer, and the model normalises on the device.
    """
    x = frames.movedim(-1, -3).float().div_(255)
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(3, 1, 1)
    return (x - m) / s


def build_transform(size: int | tuple[int, int], train: bool, flip: bool = False,
                    scale: tuple[float, float] = (0.5, 1.0)) -> Compose:
    size = (size, size) if isinstance(size, int) else tuple(size)
    if not train:
        return Compose([Resize(size)])
    steps: list = [RandomResizedCrop(size, scale=scale)]
    if flip:
        steps.append(RandomFlip())
    return Compose(steps)
