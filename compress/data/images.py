"""Read a folder of images, one subfolder per class (`cat/1.png`, `dog/7.jpg`), with Pillow:
each image resized and scaled to 0..1, then normalized per channel, into [N, C, H, W] float32."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from compress.config.limits import MAX_IMAGE_FILE_BYTES, MAX_IMAGE_PIXELS
from compress.data import class_index
from compress.errors import DataError
from compress.files import open_regular

if TYPE_CHECKING:
    from compress.config import DataSource, ImageSpec

SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def read(source: DataSource, where: str, folder: Path):
    files = _image_files(folder, where)
    if source.limit and source.limit < len(files):
        # Files are sorted by class: take them evenly spread, so that every class is present.
        files = [files[int(i)] for i in np.linspace(0, len(files) - 1, source.limit)]
    names = [f.parent.name for f in files]
    labels, classes = class_index(names, source.classes, where)
    spec = source.image
    if spec is None:  # the config requires it of images
        raise DataError(f"{where}.image: give the images' size and channels")
    images = np.stack([_pixels(f, spec, where) for f in files])
    return {source.input_names[0]: _normalized(images, spec)}, labels, classes


def _image_files(folder: Path, where: str) -> list[Path]:
    files = sorted(
        f
        for sub in folder.iterdir()
        if sub.is_dir()
        for f in sub.iterdir()
        if f.suffix.lower() in SUFFIXES
    )
    if not files:
        raise DataError(
            f"{where}.path: {folder} holds no images in class subfolders; lay it out as "
            "CLASS_NAME/IMAGE.png"
        )
    return files


def _pixels(file: Path, spec: ImageSpec, where: str) -> np.ndarray:
    """One image as float32 [C, H, W] in 0..1."""
    from PIL import Image, UnidentifiedImageError

    height, width = spec.size
    try:
        with warnings.catch_warnings():  # Pillow's own bomb warning: our limit is the one
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            # a regular file (a FIFO named x.png would block the read), of a bounded size
            with open_regular(file, f"{where}: the image", DataError, "an image file") as handle:
                _check_file_size(os.fstat(handle.fileno()).st_size, file, where)
                with Image.open(handle) as image:
                    _check_pixels(image.size, file, where)  # from the header, before decoding
                    converted = image.convert("L" if spec.channels == 1 else "RGB")
                    resized = converted.resize((width, height), Image.Resampling.BILINEAR)
                    array = np.asarray(resized, dtype=np.float32) / 255.0
    except DataError:
        raise
    except Image.DecompressionBombError as e:  # Pillow refuses at twice its own limit
        raise DataError(
            f"{where}: the image {file} is too large ({e}); scale it down or remove it"
        ) from None
    except (OSError, UnidentifiedImageError) as e:
        raise DataError(f"{where}: cannot read the image {file} ({e}); fix or remove it") from None
    except Exception as e:  # a decoder's own complaint about a malformed file
        raise DataError(
            f"{where}: cannot decode the image {file} ({type(e).__name__}: {e}); fix or remove it"
        ) from None
    return array[None] if spec.channels == 1 else array.transpose(2, 0, 1)


def _check_file_size(size: int, file: Path, where: str) -> None:
    if size > MAX_IMAGE_FILE_BYTES:
        raise DataError(
            f"{where}: the image {file} is {size:,} bytes, over the limit of "
            f"{MAX_IMAGE_FILE_BYTES:,}; scale it down or remove it"
        )


def _check_pixels(size: tuple[int, int], file: Path, where: str) -> None:
    width, height = size
    if width * height > MAX_IMAGE_PIXELS:
        raise DataError(
            f"{where}: the image {file} has {width * height:,} pixels, over the limit of "
            f"{MAX_IMAGE_PIXELS:,}; scale it down or remove it"
        )


def _normalized(images: np.ndarray, spec: ImageSpec) -> np.ndarray:
    mean = np.asarray(spec.mean, dtype=np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(spec.std, dtype=np.float32).reshape(1, -1, 1, 1)
    return ((images - mean) / std).astype(np.float32)
