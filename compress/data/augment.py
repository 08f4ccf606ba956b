"""Light augmentation of train image batches [N, C, H, W]: random flips and random crops of the
original size from a padded image, drawn per sample from a seeded generator."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from compress.config import Augment


def augment_batch(batch: list, augment: Augment | None, generator) -> list:
    """`batch` (tensors) changed as `augment` says; the same tensors when there is nothing to do."""
    if augment is None:
        return batch
    return [_augment_images(images, augment, generator) for images in batch]


def _augment_images(images, augment: Augment, generator):
    import torch

    if augment.hflip:
        images = _flip_some(images, dim=3, generator=generator)
    if augment.vflip:
        images = _flip_some(images, dim=2, generator=generator)
    if augment.crop_padding:
        pad, (height, width) = augment.crop_padding, images.shape[2:]
        padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
        offsets = torch.randint(0, 2 * pad + 1, (len(images), 2), generator=generator)
        images = torch.stack(
            [
                padded[i, :, top : top + height, left : left + width]
                for i, (top, left) in enumerate(offsets.tolist())
            ]
        )
    return images


def _flip_some(images, dim: int, generator):
    """Each image flipped along `dim` with probability 0.5."""
    import torch

    chosen = torch.rand(len(images), generator=generator) < 0.5
    return torch.where(chosen.view(-1, 1, 1, 1), images.flip(dim), images)
