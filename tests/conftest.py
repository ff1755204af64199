"""Shared fixtures (progress bars off, the digits data set, a clean plugin host per test) and the
helpers several test modules use."""

from __future__ import annotations

import hashlib
import os
import pickle
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
import torch
from packaging.version import Version
from scipy import ndimage
from torch import nn

import locrob
from locrob import plugins
from locrob.alpha.geometry import row_norms
from locrob.alpha.philox import PhiloxDraws
from locrob.plugins import registries

# the example plugin's package, and the .dist-info pip would write when installing it
PLUGIN_PACKAGE = Path(__file__).parents[1] / "examples" / "third_party_plugin"
THIRD_PARTY = Path(__file__).parent / "third_party"
os.environ["LOCROB_PROGRESS"] = "0"  # before any fixture, session-scoped ones included


@pytest.fixture(autouse=True)
def _quiet_and_isolated(monkeypatch):
    """No progress bars; every test starts and ends with a freshly loaded plugin host."""
    monkeypatch.setenv("LOCROB_PROGRESS", "0")
    monkeypatch.delenv("LOCROB_PLUGINS", raising=False)
    plugins.reload()
    yield
    plugins.reload()


@pytest.fixture(scope="session")
def digits() -> locrob.ImageData:
    return locrob.load_dataset("digits")


@pytest.fixture(scope="session")
def trained(tmp_path_factory, digits):
    """A small-cnn trained 6 epochs on digits, saved as a checkpoint."""
    out = tmp_path_factory.mktemp("run")
    config = locrob.TrainConfig(epochs=6)
    return locrob.train("small-cnn", digits, config=config, out=out, device="cpu")


@pytest.fixture
def locrob_cli(monkeypatch, capsys):
    """Run ``locrob ARGS`` in-process through the console entry point: (exit code, out, err)."""
    from locrob import cli

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        monkeypatch.setattr(sys, "argv", ["locrob", *args])
        code = 0
        try:
            cli.main()
        except SystemExit as exit_:
            code = exit_.code or 0
        out, err = capsys.readouterr()
        return code, out, err

    return run


@contextmanager
def one_thread() -> Iterator[None]:
    """torch on one CPU thread for the block: a float sum's last bits can depend on how many
    threads shared it, so a comparison with one-thread workers runs on one thread too."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def subset(data: locrob.ImageData, n_train: int, n_test: int | None = None) -> locrob.ImageData:
    """The first images of each split, as a small data set."""
    n_test = len(data.test_y) if n_test is None else n_test
    return locrob.ImageData(
        "small",
        data.train_x[:n_train],
        data.train_y[:n_train],
        data.test_x[:n_test],
        data.test_y[:n_test],
    )


def assert_reloads(model: torch.nn.Module, path: Path, data: locrob.ImageData) -> None:
    """The checkpoint at ``path`` rebuilds ``model``: the same outputs on a few test images."""
    loaded, _ = locrob.load_checkpoint(path)
    x = data.test_x[:4].float() / 255
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x), atol=1e-5)


class Lookup(torch.nn.Module):
    """Right exactly on the stored images (their stored labels), class 9 everywhere else."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("keys", images.flatten(1))
        self.register_buffer("onehot", torch.nn.functional.one_hot(labels.long(), 10).float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hit = ((x.flatten(1)[:, None] - self.keys[None]).abs().amax(2) < 1e-6).float()
        never = torch.nn.functional.one_hot(torch.tensor(9), 10).float()
        return torch.where(hit.any(1, keepdim=True), hit @ self.onehot, never)


class TopLeftGray(torch.nn.Module):
    """A linear classifier of one number: the gray level (channel mean) of the top-left pixel.

    An L-inf perturbation of size eps moves that number by at most eps, so an answer whose
    gray level lies more than eps from the decision threshold survives every attack.
    """

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(1, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x[:, :, 0, 0].mean(1, keepdim=True))


def one_robust_one_fragile(images: torch.Tensor, labels: torch.Tensor, eps: float) -> TopLeftGray:
    """A :class:`TopLeftGray` right on two of ``images`` (floats in [0, 1]) only, one robust.

    It gives the darkest image's label below a threshold and the brightest's above it, set
    eps / 4 below the brightest, so the darkest lies more than eps from it (checked) and keeps
    its answer under attack, while darkening the brightest's pixel by eps (its largest channel
    holds at least eps, so its gray level drops by eps / 3 at least) flips its answer. With
    distinct labels, every other image is wrong: clean accuracy 2 / n, robust accuracy 1 / n.
    """
    gray = images[:, :, 0, 0].mean(1).double()
    dark, bright = int(gray.argmin()), int(gray.argmax())
    threshold = float(gray[bright]) - eps / 4
    assert threshold - float(gray[dark]) > eps and float(gray[bright]) >= eps, "images unfit"
    gain = 10.0  # small enough that softmax does not saturate near the threshold
    model = TopLeftGray()
    with torch.no_grad():
        model.fc.weight.zero_()
        model.fc.bias.fill_(-1.0)  # the other classes: below both named ones for every input
        for label, sign in ((int(labels[dark]), -1.0), (int(labels[bright]), 1.0)):
            model.fc.weight[label, 0] = sign * gain
            model.fc.bias[label] = -sign * gain * threshold
    return model.eval()


@pytest.fixture
def third_party(monkeypatch):
    """Put the example plugin's package and its .dist-info on sys.path, as pip would."""
    monkeypatch.syspath_prepend(str(PLUGIN_PACKAGE))
    monkeypatch.syspath_prepend(str(THIRD_PARTY))
    yield THIRD_PARTY
    sys.modules.pop("locrob_example", None)


def _pickle(path: Path, obj: object) -> None:
    with path.open("wb") as f:
        pickle.dump(obj, f, protocol=2)


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def fake_cifar10(tmp_path, monkeypatch):
    """A tiny CIFAR-10 in torchvision's python-version layout (pickled batches of flat rows).

    The checksums torchvision verifies are set to the fake files' own md5 sums, so the real
    integrity check runs and passes. Returns (root, {split: (images NCHW uint8, labels)}).
    """
    from torchvision.datasets import CIFAR10

    rng = np.random.default_rng(0)
    folder = tmp_path / CIFAR10.base_folder
    folder.mkdir()
    expected: dict[str, tuple[np.ndarray, np.ndarray]] = {"train": ([], []), "test": ([], [])}
    train_list = []
    for i in range(1, 6):
        rows = rng.integers(0, 256, size=(4, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=4).tolist()
        name = f"data_batch_{i}"
        _pickle(folder / name, {"batch_label": name, "data": rows, "labels": labels})
        train_list.append([name, _md5(folder / name)])
        expected["train"][0].append(rows)
        expected["train"][1].extend(labels)
    rows = rng.integers(0, 256, size=(6, 3072), dtype=np.uint8)
    labels = list(range(6))
    _pickle(folder / "test_batch", {"batch_label": "test", "data": rows, "labels": labels})
    expected["test"][0].append(rows)
    expected["test"][1].extend(labels)
    names = [
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ]
    _pickle(folder / "batches.meta", {"label_names": names, "num_vis": 3072})
    monkeypatch.setattr(CIFAR10, "train_list", train_list)
    monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", _md5(folder / "test_batch")]])
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": _md5(folder / "batches.meta")})
    arrays = {
        split: (np.concatenate(rows).reshape(-1, 3, 32, 32), np.array(labels))
        for split, (rows, labels) in expected.items()
    }
    return tmp_path, arrays


# Helpers several test modules share (checks, reference transcriptions, small models).


def smooth_images(n: int, channels: int = 3, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Natural-looking 8-bit test images: smooth colour fields with edges and fine texture."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((n, channels, 4, 4))
    fields = ndimage.zoom(coarse, (1, 1, size / 4, size / 4), order=1)
    edges = (np.add.outer(np.arange(size), np.arange(size)) % 11 < 3)[None, None] * 0.3
    x = np.clip(0.7 * fields + edges + 0.05 * rng.standard_normal(fields.shape), 0, 1)
    return torch.from_numpy(np.round(x * 255) / 255).float()


def params(name: str, severity: int, preset: str = "cifar"):
    return registries().corruptions.get(name).parameters(severity, preset)


def hwc(x: torch.Tensor) -> np.ndarray:
    """One image as the references hold it: H x W x C float64."""
    return x.permute(1, 2, 0).double().numpy()


def reference_disk(radius: float, alias_blur: float) -> np.ndarray:
    half, taps = (8, 3) if radius <= 8 else (int(radius), 5)
    grid = np.arange(-half, half + 1)
    xx, yy = np.meshgrid(grid, grid)
    disk = (xx**2 + yy**2 <= radius**2).astype(np.float64)
    disk /= disk.sum()
    g = np.exp(-((np.arange(taps) - taps // 2) ** 2) / (2 * alias_blur**2))
    g /= g.sum()
    # OpenCV's GaussianBlur: separable taps, BORDER_REFLECT_101 (numpy's 'reflect')
    padded = np.pad(disk, taps // 2, mode="reflect")
    rows = sum(g[k] * padded[k : k + len(grid), :] for k in range(taps))
    return sum(g[k] * rows[:, k : k + len(grid)] for k in range(taps))


def reference_elastic(img, alpha, sigma, corner_shift, fields):
    """cv2.warpAffine (reflect-101) and scipy map_coordinates (reflect), written with scipy."""
    h, w = img.shape[:2]
    centre = np.float32((h, w)) // 2
    side = min(h, w) // 3
    pts1 = np.float64([centre + side, [centre[0] + side, centre[1] - side], centre - side])
    pts2 = pts1 + corner_shift
    affine = np.linalg.solve(np.c_[pts1, np.ones(3)], pts2).T  # cv2.getAffineTransform
    inverse = np.linalg.inv(affine[:, :2])
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    src = inverse @ (np.stack([xx.ravel(), yy.ravel()]) - affine[:, 2:])
    warped = np.stack(
        [
            ndimage.map_coordinates(img[..., c], [src[1], src[0]], order=1, mode="mirror").reshape(
                h, w
            )
            for c in range(img.shape[2])
        ],
        axis=-1,
    )
    dx = ndimage.gaussian_filter(fields[0], sigma, mode="reflect", truncate=3) * alpha
    dy = ndimage.gaussian_filter(fields[1], sigma, mode="reflect", truncate=3) * alpha
    return np.stack(
        [
            ndimage.map_coordinates(warped[..., c], [yy + dy, xx + dx], order=1, mode="reflect")
            for c in range(img.shape[2])
        ],
        axis=-1,
    )


def random_set(n=50, classes=3, seed=0, shape=(3, 4, 4)):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, *shape), generator=g, dtype=torch.uint8)
    return x, torch.randint(0, classes, (n,), generator=g)


def brute(x, y, p):
    """Distinct-class distances of every unordered pair, in [0, 1] units, fp64."""
    flat = x.flatten(1).double() / (255.0 if x.dtype == torch.uint8 else 1.0)
    diff = flat[:, None] - flat[None]
    d = diff.abs().amax(-1) if p == "inf" else diff.norm(dim=-1)
    i, j = torch.triu_indices(len(x), len(x), 1)
    keep = y[i] != y[j]
    return d[i, j][keep], y[i][keep], y[j][keep]


def numpy_smoothness(a: np.ndarray, labels: np.ndarray, classes: int, m: int) -> float:
    """trace(Y^T L^m Y) written out independently in numpy, float64."""
    n = a / np.linalg.norm(a, axis=1, keepdims=True)
    w = n @ n.T
    lap = np.diag(w.sum(axis=1)) - w
    y = np.eye(classes)[labels]
    return float(np.trace(y.T @ np.linalg.matrix_power(lap, m) @ y))


BOUND = 1 + 1e-4


def operator_norm(layer: nn.Module, shape: tuple[int, ...], iters: int = 300) -> float:
    """Largest singular value of the layer's linear part, by power iteration on A^T A (fp64)."""
    zero = torch.zeros(shape, dtype=torch.float64)

    def linear(v):
        return layer(v) - layer(zero)  # the bias is a translation

    v = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for _ in range(iters):
        v = (v / v.norm()).requires_grad_(True)
        u = linear(v)
        (v,) = torch.autograd.grad(u, v, grad_outputs=u)  # A^T A v
    v = v.detach() / v.norm()
    return linear(v).norm().item()


def linear_model(out=8, inp=16, seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(inp, out, bias=False)).double()
    return model, torch.linalg.matrix_norm(model[1].weight.detach(), 2).item()


def points(n=6, seed=1):
    return torch.randn(
        n, 1, 4, 4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )


NEEDS_CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def check_reported_perturbations(model, x, result):
    """Each radius's reported perturbation, applied on the CPU, gives the reported ratio."""
    for k in range(len(result.radii)):
        i = int(result.argmax_point[k])
        delta = result.perturbation[k]
        xi = x[i : i + 1].float() / 255
        assert torch.all(xi + delta >= -1e-6) and torch.all(xi + delta <= 1 + 1e-6)
        assert delta.norm() <= result.radii[k] * (1 + 1e-5)
        with torch.no_grad():
            diff = model(xi + delta).softmax(1) - model(xi).softmax(1)
        ratio = (diff.norm() / delta.norm()).item()
        assert ratio == pytest.approx(result.per_radius[k].item(), rel=1e-3)


def write_cifar10c(root, corruptions, n_per_severity=10000, n_written=8, folder="CIFAR-10-C"):
    """CIFAR-10-C files in their published layout: <corruption>.npy holds 5 x 10000 uint8
    HWC images (severity blocks in order), labels.npy the 10000 labels five times over.

    The files are memory-mapped and only the first ``n_written`` images of each severity are
    written, so they take little disk. Returns what was written per (corruption, severity).
    """
    folder = root / folder
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    labels = np.tile(rng.integers(0, 9, n_per_severity).astype(np.uint8), 5)  # never 9
    np.save(folder / "labels.npy", labels)
    written = {}
    for corruption in corruptions:
        images = np.lib.format.open_memmap(
            folder / f"{corruption}.npy",
            mode="w+",
            dtype=np.uint8,
            shape=(5 * n_per_severity, 32, 32, 3),
        )
        for severity in range(1, 6):
            block = rng.integers(0, 256, (n_written, 32, 32, 3), dtype=np.uint8)
            images[(severity - 1) * n_per_severity :][:n_written] = block
            written[corruption, severity] = block
        images.flush()
        del images
    return written, labels[:n_written]


# The Philox direction kernel's checks (tests/test_philox.py runs them in Triton's interpreter,
# tests/test_cuda.py on a GPU): 48 features, a row in one block and a masked tail.
PHILOX_SHAPE = (3, 4, 4)
PHILOX_FEATURES = 48


def check_philox_directions(device: str = "cpu") -> None:
    cpu = torch.device(device)
    for p, noise, n in (
        (2.0, "gaussian", 1000),
        (2.0, "uniform", 20),
        (float("inf"), "gaussian", 20),
    ):
        draws = PhiloxDraws(7, PHILOX_SHAPE, p, noise, cpu, width=3 if n == 20 else 1)
        d = draws.get(0, n)
        assert d.shape == (n, draws.width, *PHILOX_SHAPE)
        rows = d.reshape(-1, PHILOX_FEATURES)
        ones = torch.ones(len(rows), device=cpu)
        assert torch.allclose(row_norms(rows, p), ones, rtol=1e-5), (p, noise)
        # addressed by (index, column): any range, any single address, the same numbers
        assert torch.equal(draws.get(5, 9), d[5:9])
        column = draws.width - 1
        assert torch.equal(draws.at([7, 2], [column, 0]), torch.stack([d[7, column], d[2, 0]]))
        assert not torch.equal(draws.sibling(1, draws.width).get(0, 4), d[:4])
        if n > 20:
            # uniform on the sphere: second moments I / D (each about 5 standard errors
            # wide), first moments zero
            u = rows.double().cpu()
            moments = u.T @ u / n
            share = torch.full_like(u[0], 1 / PHILOX_FEATURES)
            assert torch.allclose(moments.diagonal(), share, rtol=0.25)
            assert (moments - torch.diag(moments.diagonal())).abs().max() < 0.25 / PHILOX_FEATURES
            assert u.mean(0).abs().max() < 5 / (PHILOX_FEATURES * n) ** 0.5


def check_philox_moves(device: str = "cpu") -> None:
    cpu = torch.device(device)
    g = torch.Generator().manual_seed(0)
    # channels-last points (a view of NHWC memory): the kernel must not read them as NCHW
    c, h, w = PHILOX_SHAPE
    x = torch.rand(5, h, w, c, generator=g).to(cpu).permute(0, 3, 1, 2)
    assert not x.is_contiguous()
    radii = torch.tensor([0.5, 1.0, 2.0], device=cpu)
    n_draws = 4
    box = (0.0, 1.0)
    for p, width, clamp in (
        (2.0, 1, None),
        (2.0, 3, box),
        (float("inf"), 1, box),
        (float("inf"), 3, None),
    ):
        draws = PhiloxDraws(3, PHILOX_SHAPE, p, "gaussian", cpu, width=width)
        first, pairs, first_column, columns = 6, 9, 1, 2
        moved, denominator = draws.perturbed(
            x, first, pairs, n_draws, radii, first_column, columns, clamp
        )
        index = torch.arange(first, first + pairs, device=cpu)
        d = draws.get(first, first + pairs)
        if width == 1:
            d = d.expand(-1, 3, *PHILOX_SHAPE)
        d = d[:, first_column : first_column + columns]
        r = radii[first_column : first_column + columns].view(1, -1, 1, 1, 1)
        start = x[index // n_draws].unsqueeze(1)
        expected = start + r * d
        if clamp is not None:
            expected = expected.clamp(*clamp)
        assert torch.allclose(moved, expected, atol=1e-6), (p, width, clamp)
        norms = row_norms(expected - start, p, lead=2)
        assert torch.allclose(denominator, norms, rtol=1e-5, atol=1e-7)


def run_in_triton_interpreter(module: str, function: str) -> None:
    """Run ``module.function()`` of the tests in a process with TRITON_INTERPRET=1, set before
    anything imports Triton (its interpreter replaces triton.language's functions only then).
    Skips where the installed Triton's interpreter cannot run on the installed NumPy."""
    triton = metadata.version("triton")
    # Triton up to 3.6 reads a scalar kernel argument in its interpreter as int() of a
    # one-element array, which NumPy 2.4 refuses; 3.7 squeezes it first (their interpreter.py)
    if Version(triton) < Version("3.7") and Version(np.__version__) >= Version("2.4"):
        pytest.skip(f"Triton {triton}'s interpreter cannot run on NumPy {np.__version__}")
    env = {**os.environ, "TRITON_INTERPRET": "1", "LOCROB_PROGRESS": "0"}
    for knob in ("LOCROB_TRITON", "LOCROB_FUSED"):
        env.pop(knob, None)
    done = subprocess.run(
        [sys.executable, "-c", f"import {module}; {module}.{function}()"],
        cwd=Path(__file__).parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]


def sm90_kernels():
    """:mod:`locrob.bench.kernels`, which builds Triton kernels for sm_90 without a GPU;
    skips where Triton or its CUDA toolchain (ptxas, nvdisasm) is absent."""
    pytest.importorskip("triton")
    from locrob.bench import kernels
    from locrob.errors import LocrobError

    try:
        kernels.toolchain()
    except LocrobError as err:
        pytest.skip(str(err))
    return kernels
