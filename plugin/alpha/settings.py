"""Estimator settings, the named presets, and their checks."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch

from locrob.alpha.forward import COMPILE
from locrob.alpha.geometry import NOISES, norm_name, parse_norm
from locrob.errors import LocrobError

OutputFn = Callable[[torch.Tensor], torch.Tensor]
OUTPUTS: dict[str, OutputFn] = {
    "softmax": lambda logits: logits.softmax(dim=1),
    "logits": lambda logits: logits,
}
METHODS = ("sample", "search", "bound")
DIRECTIONS = ("fresh", "shared")
DENOMINATORS = ("effective", "nominal")
FORWARD_DTYPES = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}


def authors_radii() -> list[float]:
    """The radii of the authors' ``r_alpha.py``: 1.75 k / 30 for k = 1..30."""
    return [1.75 * k / 30 for k in range(1, 31)]


@dataclass
class AlphaSettings:
    """How alpha_lim is estimated. Every field is recorded with the result.

    ``directions="shared"`` (the default) reuses each point's ``n_draws`` unit directions at
    every radius: one noise draw per direction instead of one per radius, which matters on
    small models where noise generation costs as much as the forward pass; the radii are then
    correlated, each one still a max over ``n_draws`` random directions. ``"fresh"`` draws new
    directions at every radius, as the authors' loop does (both presets use it).

    ``clamp`` and ``denominator`` decide which ratio is measured. With the default
    ``clamp=(0, 1)`` and ``denominator="effective"`` (the authors' ``r_alpha.py``), x+e is
    clamped to the image box and divided by the effective ||clamp(x+e) - x||.
    ``denominator="nominal"`` divides by ||e|| = r instead; ``clamp=None`` leaves x+e where it
    is. The paper's Definition 1 (no box, ||F(x+e) - F(x)|| / ||e||) is ``clamp=None``, for
    which both denominators coincide.
    """

    radii: list[float] = field(default_factory=authors_radii)
    norm: str = "l2"
    output: str = "softmax"
    output_norm: str | None = None
    method: str = "sample"
    max_examples: int | None = None
    n_draws: int = 100
    noise: str = "gaussian"
    directions: str = "shared"
    clamp: tuple[float, float] | None = (0.0, 1.0)
    denominator: str = "effective"
    seed: int = 0
    forward_dtype: str = "float32"
    compile: str = "auto"  # torch.compile of the sampling's forward pass: auto (long GPU runs)
    memory_budget_mb: float | None = None
    chunk_size: int | None = None  # images per forward pass (pairs x radii)
    search_steps: int = 25
    search_restarts: int = 4
    search_step_size: float = 0.25

    def __post_init__(self) -> None:
        try:
            radii = [float(r) for r in self.radii]
        except (TypeError, ValueError):
            raise LocrobError(f"radii must be a list of numbers, got {self.radii!r}") from None
        if not radii or any(not math.isfinite(r) or r <= 0 for r in radii):
            raise LocrobError(f"radii must be positive finite numbers, got {self.radii}")
        if any(b <= a for a, b in itertools.pairwise(radii)):
            raise LocrobError(f"radii must be strictly increasing, got {self.radii}")
        self.radii = radii
        self.norm = norm_name(parse_norm(self.norm))
        self.output_norm = norm_name(parse_norm(self.output_norm or self.norm))
        _one_of("method", self.method, METHODS)
        _one_of("noise", self.noise, NOISES)
        _one_of("directions", self.directions, DIRECTIONS)
        _one_of("denominator", self.denominator, DENOMINATORS)
        _one_of("forward_dtype", self.forward_dtype, tuple(FORWARD_DTYPES))
        _one_of("compile", self.compile, COMPILE)
        if self.output not in OUTPUTS and not callable(self.output):
            _one_of("output", self.output, tuple(OUTPUTS))
        for name in ("n_draws", "search_steps", "search_restarts", "seed"):
            _integer(name, getattr(self, name), minimum=0 if name == "seed" else 1, optional=False)
        for name in ("max_examples", "chunk_size"):
            _integer(name, getattr(self, name), minimum=1, optional=True)
        if not isinstance(self.search_step_size, (int, float)) or self.search_step_size <= 0:
            raise LocrobError(
                f"search_step_size must be a positive number, got {self.search_step_size!r}"
            )
        if self.clamp is not None:
            try:
                lo, hi = (float(v) for v in self.clamp)
            except (TypeError, ValueError):
                raise LocrobError(
                    f"clamp must be (low, high) or None, got {self.clamp!r}"
                ) from None
            if not lo < hi:
                raise LocrobError(f"clamp must be (low, high) with low < high, got {self.clamp}")
            self.clamp = (lo, hi)

    @property
    def p_in(self) -> float:
        return parse_norm(self.norm)

    @property
    def p_out(self) -> float:
        return parse_norm(self.output_norm or self.norm)

    def output_fn(self) -> OutputFn:
        return self.output if callable(self.output) else OUTPUTS[self.output]

    def describe(self) -> dict[str, Any]:
        """JSON-able settings (a callable output is recorded by name)."""
        data = asdict(self)
        if callable(self.output):
            data["output"] = getattr(self.output, "__name__", "callable")
        data["clamp"] = list(self.clamp) if self.clamp is not None else None
        return data


PRESETS: dict[str, dict[str, Any]] = {
    # the paper's counts and noise; the rest as r_alpha.py (see resolve)
    "paper": {
        "max_examples": 100,
        "n_draws": 1000,
        "noise": "gaussian",
        "directions": "fresh",
        "radii": authors_radii(),
    },
    # r_alpha.py throughout
    "authors-code": {
        "max_examples": 1000,
        "n_draws": 100,
        "noise": "uniform",
        "directions": "fresh",
        "radii": authors_radii(),
    },
}


def resolve(preset: str | None, radii: Sequence[float] | None, **overrides: Any) -> AlphaSettings:
    """Settings from a preset, then the given options (each applied as given, ``None`` too).

    Where each preset's settings come from. The paper (Sec. 4, Fig. 5) states only the counts
    and the Gaussian noise: ``paper`` is 100 training examples x 1000 Gaussian draws.
    ``authors-code`` is the authors' ``r_alpha.py`` throughout: the first 1000 training images x
    100 uniform draws. Everything else, in both, is what ``r_alpha.py`` does and the paper
    leaves open: the radii 1.75 k / 30 (k = 1..30), the L2 norm on both sides, F = softmax,
    draws rescaled to norm exactly r, fresh directions at every radius, x+e clamped to [0, 1]
    and the effective perturbation ||clamp(x+e) - x|| as denominator (the ``AlphaSettings``
    defaults ``clamp=(0, 1)`` and ``denominator="effective"``). For the paper's Definition 1 on
    the open ball, add ``clamp=None``; ``denominator="nominal"`` divides by r instead.
    """
    base: dict[str, Any] = {}
    if preset is not None:
        if preset not in PRESETS:
            raise LocrobError(f"unknown preset '{preset}'; known: {', '.join(PRESETS)}")
        base.update(PRESETS[preset])
    if radii is not None:
        base["radii"] = list(radii)
    known = {f.name for f in fields(AlphaSettings)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise LocrobError(f"unknown alpha_lim setting {', '.join(unknown)}")
    base.update(overrides)
    # built fresh, not replace()d: __post_init__ derives output_norm from norm
    return AlphaSettings(**base)


def _integer(name: str, value: object, minimum: int, optional: bool) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise LocrobError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _one_of(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise LocrobError(f"unknown {name} {value!r}; use one of {', '.join(allowed)}")
