"""Runtime helpers: what torch prints around them."""

from __future__ import annotations

import logging

import pytest
import torch

from locrob.runtime import autocast, quiet_cuda_probe


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


def test_full_precision_on_cuda_is_ieee_fp32_for_the_block_and_restored_after():
    """cuDNN's fp32 convolutions default to TF32; α_lim in float32 asks for IEEE fp32, and
    gives the settings back as they were (the flags are set without a GPU). Code that reads
    the legacy switches inside the block (torch's own, cudnn.flags()) still can."""
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul

    def state():
        return cudnn.conv.fp32_precision, cudnn.rnn.fp32_precision, matmul.fp32_precision

    before = state(), cudnn.allow_tf32, matmul.allow_tf32
    with autocast(torch.device("cuda"), None):
        assert "tf32" not in state() and not cudnn.allow_tf32 and not matmul.allow_tf32
        with cudnn.flags(enabled=True):
            pass
    assert (state(), cudnn.allow_tf32, matmul.allow_tf32) == before
    with pytest.raises(RuntimeError, match="inside"), autocast(torch.device("cuda"), None):
        raise RuntimeError("inside")
    assert (state(), cudnn.allow_tf32, matmul.allow_tf32) == before
    with autocast(torch.device("cpu"), None):  # the CPU has no TF32: nothing to set
        assert (state(), cudnn.allow_tf32, matmul.allow_tf32) == before
