"""Whether this node can run every step of examples/gpu_figures.sh, checked before the long ones.

    python3 examples/gpu_node_check.py

Each framework a step needs is imported for real, not only looked up: a package can be
present and still miss one of its own requirements (RobustBench 1.1.1 imports ``autoattack``,
which the ``pyautoattack`` distribution provides, and ``gdown``, which imports ``bs4``), and
an offline node installed with ``--no-deps`` finds that out only at the step that imports
it. Prints one line per framework, then the GPU; exits with 1 when any is missing or no
CUDA device is visible.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from importlib.metadata import PackageNotFoundError, version

import torch

from locrob.adapters.robustbench import import_robustbench
from locrob.errors import LocrobError
from locrob.report import environment

# distribution -> (the module its step imports, what needs it)
NEEDED = {
    "triton": ("triton", "the separation and noise kernels"),
    "torchattacks": ("torchattacks", "PGD in the CUDA tests"),
    "robustbench": ("robustbench.model_zoo", "WideResNet-28-10"),
    "imagecorruptions": ("imagecorruptions", "the frost photographs and the corruptions baseline"),
}


def missing_frameworks() -> list[str]:
    """Print a line per framework (its version, or why it does not import); the missing ones."""
    missing = []
    for name, (module, purpose) in NEEDED.items():
        # RobustBench through locrob's shim, as locrob imports it (autoattack aliased first)
        load = import_robustbench if name == "robustbench" else importlib.import_module
        try:
            with warnings.catch_warnings():  # deprecations of their imports, not ours to read
                warnings.simplefilter("ignore")
                load(module)
            print(f"{name} {version(name)}: ok")
        except (ImportError, LocrobError, PackageNotFoundError) as err:  # each names the module
            print(f"{name}: missing, for {purpose} ({err})")
            missing.append(name)
    return missing


def main() -> int:
    """Check the frameworks and the GPU; 1 when anything is missing."""
    cuda = torch.cuda.is_available()
    # the versions, device and threads a report records, as the benchmarks will see them
    print(environment(torch.device("cuda" if cuda else "cpu")))
    missing = missing_frameworks()
    if not cuda:
        print("cuda: no CUDA device visible")
        return 1
    print(torch.cuda.get_device_properties(0))
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
