"""Runtime helpers: what torch prints around them."""

from __future__ import annotations

import logging

from locrob.runtime import quiet_cuda_probe


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_torchs_no_cuda_runtime_warning_is_dropped_and_its_other_messages_kept():
    # torch.utils.cpp_extension logs this at import, which torch.compile causes on a CPU
    logger = logging.getLogger("torch.utils.cpp_extension")
    collect = Collect()
    logger.addHandler(collect)
    try:
        quiet_cuda_probe()
        logger.warning("No CUDA runtime is found, using CUDA_HOME='%s'", "/usr/local/cuda")
        logger.warning("Error checking compiler version for %s", "c++")
    finally:
        logger.removeHandler(collect)
    assert collect.messages == ["Error checking compiler version for c++"]
