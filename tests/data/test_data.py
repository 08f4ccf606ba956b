"""Data sources besides .npz: CSV files and folders of images, read into the same arrays a model
takes; train augmentation; and the one-line errors for data that cannot be used."""

from __future__ import annotations

import csv
import io
import json
import zipfile

import numpy as np
import pytest
import torch

from compress.config import Augment, DataSource
from compress.data import load_dataset
from compress.data.augment import augment_batch
from compress.errors import DataError
from tests.helpers.cli import assert_refused, invoke
from tests.helpers.paths import SAMPLES

NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def digits(split: str):
    arrays = np.load(SAMPLES / f"digits_{split}.npz")
    return arrays["x"], arrays["y"]


def write_csv(path, x, y, label_names=None):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([f"p{i}" for i in range(64)] + ["digit"])
        for image, label in zip(x.reshape(len(x), -1), y, strict=True):
            name = label_names[label] if label_names else int(label)
            writer.writerow([repr(float(v)) for v in image] + [name])
    return path


def write_images(folder, x, y, scale: int = 1):
    """Each digit as a grayscale PNG in a folder named after its label (`3/0017.png`)."""
    from PIL import Image

    for i, (image, label) in enumerate(zip(x, y, strict=True)):
        pixels = np.round(image[0] * 255).astype(np.uint8).repeat(scale, 0).repeat(scale, 1)
        (folder / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels, mode="L").save(folder / str(label) / f"{i:04d}.png")
    return folder


def test_csv_columns_and_labels_read_as_the_npz_holds_them(tmp_path):
    x, y = digits("eval")
    path = write_csv(tmp_path / "eval.csv", x, y)
    data = load_dataset(DataSource(path=path, inputs=["x"], labels="digit"), "data.eval", tmp_path)
    assert data.inputs["x"].dtype == np.float32
    assert np.array_equal(data.inputs["x"], x.reshape(len(x), -1))
    assert np.array_equal(data.labels, y) and data.classes is None

    named = write_csv(tmp_path / "named.csv", x, y, NAMES)
    source = DataSource(path=named, inputs=["x"], labels="digit", classes=NAMES, limit=50)
    data = load_dataset(source, "data.eval", tmp_path)
    assert np.array_equal(data.labels, y[:50]) and data.classes == NAMES

    picked = DataSource(path=path, inputs=["x"], labels="digit", columns=["p9", "p10"])
    assert load_dataset(picked, "data.eval", tmp_path).inputs["x"].shape == (len(x), 2)


def test_image_folders_read_as_normalized_tensors(tmp_path):
    x, y = digits("eval")
    folder = write_images(tmp_path / "eval", x[:40], y[:40])
    spec = {"size": [8, 8], "channels": 1, "mean": [0.5], "std": [0.25]}
    classes = [str(label) for label in range(10)]  # class 6 has no image among these 40
    source = DataSource(path=folder, inputs=["x"], image=spec, classes=classes)
    data = load_dataset(source, "data.eval", tmp_path)
    assert data.inputs["x"].shape == (40, 1, 8, 8) and data.inputs["x"].dtype == np.float32
    order = np.argsort(y[:40], kind="stable")  # files come sorted by class, then name
    assert np.array_equal(data.labels, y[:40][order])
    restored = data.inputs["x"] * 0.25 + 0.5
    assert np.abs(restored - x[:40][order]).max() < 0.51 / 255  # a PNG keeps 8 bits
    large = write_images(tmp_path / "large", x[:40], y[:40], scale=3)  # stored at 24x24
    resized = load_dataset(source.model_copy(update={"path": large}), "data.eval", tmp_path)
    assert resized.inputs["x"].shape == (40, 1, 8, 8)
    assert np.corrcoef(resized.inputs["x"].ravel(), data.inputs["x"].ravel())[0, 1] > 0.95
    few = load_dataset(source.model_copy(update={"limit": 10}), "data.eval", tmp_path)
    assert len(set(few.labels)) >= 8  # a limit samples across the classes, not the first ones


def test_csv_and_image_data_score_a_model_as_npz_does(tmp_path):
    """The same eval set as npz, CSV (for a flat model) and PNG folders gives the same top-1."""
    x, y = digits("eval")
    write_images(tmp_path / "eval_images", x, y)
    folder_config = tmp_path / "images.yaml"
    folder_config.write_text(
        "version: 1\n"
        "data: {eval: {path: eval_images, inputs: [x], image: {size: [8, 8], channels: 1}}}\n"
        "report: {batch_sizes: [8], min_runs: 5, min_seconds: 0, "
        "max_seconds: 0.2, warmup_runs: 1}\n"
    )
    npz_config = tmp_path / "npz.yaml"
    npz_config.write_text(
        folder_config.read_text().replace(
            "{path: eval_images, inputs: [x], image: {size: [8, 8], channels: 1}}",
            f"{{path: {SAMPLES / 'digits_eval.npz'}, inputs: [x], labels: y}}",
        )
    )
    top1 = {}
    for name, config in (("images", folder_config), ("npz", npz_config)):
        result = invoke("run", SAMPLES / "digits_cnn.pt2", "-c", config, "-o", tmp_path / name)
        assert result.exit_code == 0, result.stderr
        top1[name] = json.loads((tmp_path / name / "report.json").read_text())["stages"][0]
    assert top1["images"]["metric"]["value"] == pytest.approx(
        top1["npz"]["metric"]["value"], abs=0.003
    )

    flat = torch.export.export(
        torch.nn.Sequential(torch.nn.Linear(64, 10)).eval(),
        (torch.zeros(4, 64),),
        dynamic_shapes=({0: torch.export.Dim("batch")},),
    )
    torch.export.save(flat, tmp_path / "flat.pt2")
    write_csv(tmp_path / "eval.csv", x, y, NAMES)
    np.savez(tmp_path / "eval_flat.npz", x=x.reshape(len(x), -1), y=y)
    classes = ", ".join(NAMES)
    scores = []
    for name, data in (
        ("csv", f"{{path: eval.csv, inputs: [x], labels: digit, classes: [{classes}]}}"),
        ("npz", "{path: eval_flat.npz, inputs: [x], labels: y}"),
    ):
        config = tmp_path / f"flat-{name}.yaml"
        config.write_text(f"version: 1\ndata: {{eval: {data}}}\nreport: {{batch_sizes: [8]}}\n")
        out = tmp_path / f"flat-{name}"
        result = invoke("run", tmp_path / "flat.pt2", "-c", config, "-o", out, "--json")
        assert result.exit_code == 0, result.stderr
        scores.append(json.loads(result.stdout)["stages"][0]["metric"]["value"])
    assert scores[0] == scores[1]


def test_augmentation_flips_and_crops_reproducibly():
    images = (
        torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).reshape(2, 1, 4, 4).repeat(16, 1, 1, 1)
    )
    flipped = augment_batch([images], Augment(hflip=True), torch.Generator().manual_seed(0))[0]
    same = [torch.equal(a, b) for a, b in zip(flipped, images, strict=True)]
    mirrored = [torch.equal(a, b.flip(2)) for a, b in zip(flipped, images, strict=True)]
    assert all(s or m for s, m in zip(same, mirrored, strict=True)) and any(same) and any(mirrored)

    crop = Augment(crop_padding=1)
    cropped = augment_batch([images], crop, torch.Generator().manual_seed(0))[0]
    again = augment_batch([images], crop, torch.Generator().manual_seed(0))[0]
    assert cropped.shape == images.shape and torch.equal(cropped, again)
    assert not torch.equal(cropped, images)
    assert augment_batch([images], None, None)[0] is images


def bad_source(tmp_path, **fields):
    return load_dataset(DataSource(inputs=["x"], **fields), "data.train", tmp_path)


def test_unusable_data_is_named(tmp_path):
    x, y = digits("eval")
    write_csv(tmp_path / "good.csv", x[:5], y[:5])
    with pytest.raises(DataError, match=r"column 'label' is not in good.csv \(it has: p0, p1"):
        bad_source(tmp_path, path="good.csv", labels="label")
    text = (tmp_path / "good.csv").read_text().splitlines()
    text[3] = text[3].replace(text[3].split(",")[4], "n/a", 1)
    (tmp_path / "bad.csv").write_text("\n".join(text))
    with pytest.raises(DataError, match=r"data row 3, column 'p4' holds 'n/a', not a number"):
        bad_source(tmp_path, path="bad.csv", labels="digit")
    with pytest.raises(DataError, match="'nine' is a class in the data but not in classes"):
        write_csv(tmp_path / "named.csv", x[:100], y[:100], NAMES)
        bad_source(tmp_path, path="named.csv", labels="digit", classes=NAMES[:9])
    (tmp_path / "empty" / "cats").mkdir(parents=True)
    with pytest.raises(DataError, match="holds no images in class subfolders"):
        bad_source(tmp_path, path="empty", image={"size": [8, 8]})
    (tmp_path / "empty" / "cats" / "1.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"cannot read the image .*1.png"):
        bad_source(tmp_path, path="empty", image={"size": [8, 8]})
    with pytest.raises(DataError, match="flips and crops need float images"):
        bad_source(tmp_path, path="good.csv", labels="digit", augment={"hflip": True})


@pytest.mark.parametrize(
    ("data", "needles"),
    [
        (
            "eval: {path: e.csv, inputs: [x], labels: digit, augment: {hflip: true}}",
            ["data.eval: only data.train is augmented; remove augment (line 3)"],
        ),
        (
            "eval: {path: imgs, inputs: [x]}",
            ["data.eval", "imgs is read as a folder of images", "which needs `image:"],
        ),
        ("eval: {path: e.csv, inputs: [a, b]}", ["csv data feeds one model input"]),
        ("eval: {path: e.npz, inputs: [x], columns: [a]}", ["columns is for csv data"]),
        ("eval: {path: imgs, inputs: [x], image: {size: [8, 8], mean: [1, 2]}}", ["mean needs"]),
    ],
)
def test_bad_data_keys_are_refused_with_the_key(tmp_path, data, needles):
    config = tmp_path / "c.yaml"
    config.write_text(f"version: 1\ndata:\n  {data}\n")
    out = tmp_path / "out"
    result = invoke("run", SAMPLES / "digits_cnn.pt2", "-c", config, "-o", out)
    assert_refused(result, out, *needles)


def test_train_and_eval_folders_with_different_classes_are_refused(tmp_path):
    x, y = digits("eval")
    write_images(tmp_path / "train", x[:60], y[:60])
    write_images(tmp_path / "eval", x[:60][y[:60] != 3], y[:60][y[:60] != 3])
    image = "image: {size: [8, 8], channels: 1}"
    config = tmp_path / "c.yaml"
    config.write_text(
        "version: 1\ndata:\n"
        f"  train: {{path: train, inputs: [x], {image}}}\n"
        f"  eval: {{path: eval, inputs: [x], {image}}}\n"
    )
    out = tmp_path / "out"
    result = invoke("run", SAMPLES / "digits_cnn.pt2", "-c", config, "-o", out)
    assert_refused(result, out, "data.train has the classes", "list the same `classes`")


def test_npz_archives_within_limits(tmp_path):
    """A deflated bomb and an array header that declares more than its member holds (numpy
    would allocate the declared size) are refused before numpy reads them."""
    np.savez_compressed(tmp_path / "bomb.npz", x=np.zeros(50_000_000, np.uint8))  # 50 KB file
    with pytest.raises(DataError, match=r"data.train.path: .*bomb.npz: .* zip bomb: .*savez"):
        bad_source(tmp_path, path="bomb.npz")
    header = io.BytesIO()
    np.lib.format.write_array(header, np.zeros(4, np.float32))
    lying = header.getvalue().replace(b"(4,)", b"(4000000000000,)")
    with zipfile.ZipFile(tmp_path / "lying.npz", "w") as archive:
        archive.writestr("x.npy", lying)
    with pytest.raises(DataError, match=r"array 'x.npy' declares 16,000,000,000,000 bytes"):
        bad_source(tmp_path, path="lying.npz")
    mask = DataSource(path=SAMPLES / "text_train.npz", inputs=["attention_mask"])
    assert load_dataset(mask, "data.train", tmp_path)  # deflated 119x: within the limit


def test_data_files_are_read_as_regular_files_bounded_as_they_are_read(tmp_path, monkeypatch):
    """A FIFO among the images is named, never opened for reading (it would block); a CSV is
    counted as it is read, not only by its size on disk."""
    import os

    x, y = digits("eval")
    folder = write_images(tmp_path / "eval", x[:4], y[:4])
    os.mkfifo(folder / str(y[0]) / "blocking.png")
    source = DataSource(path=folder, inputs=["x"], image={"size": [8, 8], "channels": 1})
    with pytest.raises(DataError, match="blocking.png: is a named pipe"):
        load_dataset(source, "data.eval", tmp_path)
    path = write_csv(tmp_path / "eval.csv", x, y)
    monkeypatch.setattr("compress.data.csv_table.MAX_TABLE_BYTES", 1000)
    table = DataSource(path=path, inputs=["x"], labels="digit")
    with pytest.raises(DataError, match="eval.csv: over the limit of 1,000 bytes"):
        load_dataset(table, "data.eval", tmp_path)
