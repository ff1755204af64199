"""Dataset sources and the image checks."""

from __future__ import annotations

import urllib.error
import urllib.request

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

import locrob
from locrob.data.images import as_images, batches
from locrob.errors import LocrobError


def test_digits_shape_dtype_and_split(digits):
    assert digits.train_x.shape == (1437, 3, 32, 32)
    assert digits.test_x.shape == (360, 3, 32, 32)
    assert digits.train_x.dtype == torch.uint8
    assert digits.num_classes == 10
    # three identical channels, full 0..255 range used
    assert torch.equal(digits.train_x[:, 0], digits.train_x[:, 2])
    assert int(digits.train_x.max()) == 255 and int(digits.train_x.min()) == 0
    # stratified: each class's test share is within one image of 20%
    counts = torch.bincount(torch.cat([digits.train_y, digits.test_y]), minlength=10)
    test_counts = torch.bincount(digits.test_y, minlength=10)
    assert torch.all((test_counts - 0.2 * counts).abs() <= 1)


def test_digits_split_is_fixed(digits):
    again = locrob.load_dataset("digits")
    assert torch.equal(again.train_x, digits.train_x)
    assert torch.equal(again.test_y, digits.test_y)


def test_digits_images_are_the_originals_upsampled(digits):
    # Independent reference: PIL's bilinear resize of each 8x8 original scaled to 0..255.
    # Train + test must be exactly the original set of (image, label) rows, reordered.
    bunch = load_digits()
    ref = np.stack(
        [
            np.asarray(
                Image.fromarray((im * 255 / 16).astype(np.float32), mode="F").resize(
                    (32, 32), Image.BILINEAR
                )
            )
            for im in bunch.images
        ]
    )
    ref = np.clip(np.round(ref), 0, 255).reshape(len(ref), -1) + 0.0  # no -0.0
    ours = torch.cat([digits.train_x, digits.test_x])[:, 0].reshape(len(ref), -1).numpy()
    labels = torch.cat([digits.train_y, digits.test_y]).numpy()
    expected = np.unique(np.column_stack([ref, bunch.target]), axis=0, return_counts=True)
    got = np.unique(np.column_stack([ours, labels]).astype(np.float64), axis=0, return_counts=True)
    assert np.array_equal(expected[0], got[0]) and np.array_equal(expected[1], got[1])


def test_fake_cifar10_loads_through_torchvision(fake_cifar10):
    root, expected = fake_cifar10
    data = locrob.load_dataset("cifar10", data_dir=root)
    assert data.classes[0] == "airplane" and data.num_classes == 10
    for split in ("train", "test"):
        x, y = data.split(split)
        assert x.dtype == torch.uint8 and x.shape[1:] == (3, 32, 32)
        assert np.array_equal(x.numpy(), expected[split][0])
        assert np.array_equal(y.numpy(), expected[split][1])


def test_fake_cifar10_spec_argument_is_the_directory(fake_cifar10):
    root, expected = fake_cifar10
    data = locrob.load_dataset(f"cifar10:{root}")
    assert len(data.train_y) == len(expected["train"][1])


def test_missing_cifar_files_name_the_path(tmp_path):
    with pytest.raises(LocrobError, match=r"cifar-10-batches-py/.*--download"):
        locrob.load_dataset("cifar10", data_dir=tmp_path)
    with pytest.raises(LocrobError, match=r"cifar-100-python/.*--download"):
        locrob.load_dataset("cifar100", data_dir=tmp_path / "data")
    assert list(tmp_path.iterdir()) == []  # no folder created for files that are not there


def offline(*args, **kwargs):
    """``urllib.request.urlopen`` on a machine without network access."""
    raise urllib.error.URLError("no route to host")


@pytest.mark.parametrize("variant", ["cifar10", "cifar100"])
def test_a_failed_cifar_download_is_an_error_and_leaves_no_empty_folder(
    tmp_path, monkeypatch, variant
):
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    root = tmp_path / "new" / "data"
    with pytest.raises(LocrobError, match=f"could not download {variant} into .*no route to host"):
        locrob.load_dataset(variant, data_dir=root, download=True)
    assert list(tmp_path.iterdir()) == []  # torchvision made root; it is gone again


def test_corrupted_cifar_files_fail_the_checksum(fake_cifar10, monkeypatch):
    from torchvision.datasets import CIFAR10

    root, _ = fake_cifar10
    monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", "0" * 32]])
    with pytest.raises(LocrobError, match="fail their checksum"):
        locrob.load_dataset("cifar10", data_dir=root)


def _arrays(rng, n=8, dtype=np.uint8):
    x = rng.integers(0, 256, size=(n, 3, 32, 32)).astype(dtype)
    return x, rng.integers(0, 3, size=n)


def test_npz_roundtrip(tmp_path):
    rng = np.random.default_rng(1)
    (xa, ya), (xb, yb) = _arrays(rng), _arrays(rng)
    path = tmp_path / "mine.npz"
    np.savez(path, x_train=xa, y_train=ya, x_test=xb, y_test=yb, classes=np.array(["a", "b", "c"]))
    data = locrob.load_dataset(f"npz:{path}")
    assert data.name == "mine" and data.classes == ["a", "b", "c"]
    assert np.array_equal(data.train_x.numpy(), xa) and np.array_equal(data.test_y.numpy(), yb)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda x: x.transpose(0, 2, 3, 1), "channels-last"),
        (lambda x: x[:, 0], "4-D NCHW"),
        (lambda x: x.astype(np.float32), r"must lie in \[0, 1\]"),
        (lambda x: np.where(x > 100, np.nan, x / 255.0), "NaN"),
    ],
)
def test_npz_bad_images_are_refused(tmp_path, change, message):
    rng = np.random.default_rng(2)
    (xa, ya), (xb, yb) = _arrays(rng), _arrays(rng)
    path = tmp_path / "bad.npz"
    np.savez(path, x_train=change(xa), y_train=ya, x_test=xb, y_test=yb)
    with pytest.raises(LocrobError, match=message):
        locrob.load_dataset(f"npz:{path}")


def test_npz_missing_arrays_and_files(tmp_path):
    path = tmp_path / "partial.npz"
    np.savez(path, x_train=np.zeros((2, 3, 4, 4), np.uint8))
    with pytest.raises(LocrobError, match="lacks the arrays y_train, x_test, y_test"):
        locrob.load_dataset(f"npz:{path}")
    with pytest.raises(LocrobError, match="npz data set file not found"):
        locrob.load_dataset(f"npz:{tmp_path / 'absent.npz'}")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(LocrobError, match=r"not a readable \.npz"):
        locrob.load_dataset(f"npz:{tmp_path / 'junk.npz'}")


def test_labels_must_match_images():
    x = torch.zeros(4, 3, 8, 8, dtype=torch.uint8)
    with pytest.raises(LocrobError, match=r"one integer per image \(4\)"):
        locrob.ImageData(
            "t", x, torch.zeros(3, dtype=torch.long), x, torch.zeros(4, dtype=torch.long)
        )
    with pytest.raises(LocrobError, match="must be integers"):
        locrob.ImageData("t", x, torch.zeros(4), x, torch.zeros(4, dtype=torch.long))


def test_float_images_at_the_bounds_are_accepted():
    x = torch.tensor([0.0, 1.0]).view(2, 1, 1, 1).expand(2, 3, 2, 2)
    assert torch.equal(as_images(x), x)


def test_batches_scale_uint8_and_follow_the_order():
    x = torch.arange(6, dtype=torch.uint8).view(6, 1, 1, 1).expand(6, 3, 1, 1)
    y = torch.arange(6)
    order = torch.tensor([5, 3, 1, 0, 2, 4])
    got = list(batches(x, y, 4, "cpu", order))
    assert [len(b[1]) for b in got] == [4, 2]
    assert torch.equal(torch.cat([b[1] for b in got]), order)
    assert torch.allclose(got[0][0][:, 0, 0, 0], order[:4].float() / 255)
