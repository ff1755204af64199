"""The sampling's forward pass in its fast forms: compiled for the chunk's one shape (smaller
batches padded up to it), channels-last memory, and the fallback where compilation fails. The
compiler's own code generation is exercised on a GPU (test_cuda.py); here torch.compile runs
with its "eager" backend, which traces the model as a compiled run does without building code."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import locrob
from locrob.alpha import forward
from locrob.alpha.forward import ChunkForward, channels_last, compiles

RADII = [0.25, 0.5, 1.0]


def conv_model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 30 * 30, 5))
    return model.double()


def images(n: int = 5) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def run(model, **options):
    return locrob.alpha_lim(
        model, images(), RADII, n_draws=7, chunk_size=12, device="cpu", **options
    )


@pytest.fixture
def traced(monkeypatch):
    """torch.compile with the "eager" backend; the batch sizes the compiled form is called
    with, recorded."""
    monkeypatch.setattr(forward, "BACKEND", "eager")
    calls = []
    compile = torch.compile

    def recording(model, **kwargs):
        compiled = compile(model, **kwargs)

        def call(x):
            calls.append(len(x))
            return compiled(x)

        return call

    monkeypatch.setattr(torch, "compile", recording)
    return calls


def test_compiled_sampling_sees_one_batch_shape_and_finds_the_same_maxima(traced):
    model = conv_model()
    seen = []
    hook = model[0].register_forward_hook(lambda m, i, o: seen.append(len(o)))
    plain = run(model, compile="off")
    hook.remove()
    compiled = run(model, compile="on")
    # 12 images per pass: 4 pairs x 3 radii; the 35 pairs end in a chunk of 3 pairs
    # (9 images), which the compiled form pads to 12 instead of compiling a second shape
    assert 9 in seen
    assert traced == [12] * (1 + 9)  # F at the 5 points, padded; then the 9 chunks
    assert torch.allclose(compiled.per_point, plain.per_point, rtol=1e-12)
    assert torch.equal(compiled.argmax_point, plain.argmax_point)
    assert torch.equal(compiled.perturbation, plain.perturbation)


def test_the_search_climbs_through_the_model_as_it_is(traced):
    """Gradients never go through the compiled form (compiled for inference, one shape)."""
    model = conv_model()
    options = {"method": "search", "search_steps": 3, "search_restarts": 1}
    compiled, plain = run(model, compile="on", **options), run(model, compile="off", **options)
    assert torch.allclose(compiled.per_point, plain.per_point, rtol=1e-12)
    assert compiled.settings["compile"] == "on"


def test_a_failed_compilation_says_so_once_and_runs_the_model(monkeypatch):
    def broken(model, **kwargs):
        def call(x):
            raise RuntimeError("no compiler for this\nsecond line")

        return call

    monkeypatch.setattr(torch, "compile", broken)
    model = conv_model()
    with pytest.warns(UserWarning, match=r"torch.compile failed \(RuntimeError: no compiler") as w:
        result = run(model, compile="on")
    assert len([x for x in w if "torch.compile" in str(x.message)]) == 1
    assert "second line" not in str(w[0].message)
    assert torch.allclose(result.per_point, run(model, compile="off").per_point, rtol=1e-12)


def test_padding_drops_the_padded_outputs(traced):
    model = conv_model()
    fast = ChunkForward(model, batch=6, compile=True, layout=False)
    x = images(4)
    with torch.no_grad():
        assert torch.allclose(fast(x), model(x), rtol=1e-12)
        assert fast(images(6)).shape == (6, 5)
        assert fast(images(8)).shape == (8, 5)  # larger than compiled for: as it is


def test_channels_last_for_the_block_then_as_before():
    model = conv_model()
    x = images(2)
    with torch.no_grad():
        expected = model(x)
        with channels_last(model, True):
            assert model[0].weight.is_contiguous(memory_format=torch.channels_last)
            fast = ChunkForward(model, batch=2, compile=False, layout=True)
            assert torch.allclose(fast(x), expected, rtol=1e-12)
        assert model[0].weight.is_contiguous()
        # a model already in channels-last memory is left as it is
        model.to(memory_format=torch.channels_last)
        with channels_last(model, True):
            pass
        assert model[0].weight.is_contiguous(memory_format=torch.channels_last)
    with channels_last(torch.tanh, False):  # a plain function, as alpha_lim takes
        pass


def test_auto_compiles_long_runs_on_a_gpu_only():
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert not compiles("auto", cpu, 10**8)
    assert not compiles("auto", gpu, forward.AUTO_COMPILE_IMAGES - 1)
    assert compiles("auto", gpu, forward.AUTO_COMPILE_IMAGES)
    assert compiles("on", cpu, 1) and not compiles("off", gpu, 10**8)
    with pytest.raises(locrob.LocrobError, match="unknown compile 'yes'"):
        run(conv_model(), compile="yes")


def test_every_batch_reaches_the_compiled_model_in_channels_last_memory(traced, monkeypatch):
    """Padded batches too: the compiler guards on strides, so a padded batch in another
    layout would build (and on a GPU capture) a second graph."""
    layouts = []
    compile = torch.compile

    def recording(model, **kwargs):
        compiled = compile(model, **kwargs)

        def call(x):
            layouts.append(x.is_contiguous(memory_format=torch.channels_last))
            return compiled(x)

        return call

    monkeypatch.setattr(torch, "compile", recording)
    model = conv_model()
    with torch.no_grad(), channels_last(model, True):
        fast = ChunkForward(model, batch=6, compile=True, layout=True)
        for n in (6, 4, 1):
            assert torch.allclose(fast(images(n)), model(images(n)), rtol=1e-12)
    assert traced == [6, 6, 6] and layouts == [True, True, True]


def test_a_float32_run_sits_whole_in_ieee_fp32_and_a_bf16_run_does_not(monkeypatch):
    """The search's gradients too: the whole float32 run sits in the IEEE fp32 block (which
    on a GPU turns cuDNN's TF32 off); a bf16 run leaves precision to autocast."""
    from locrob.alpha import estimate

    entered = []
    real = estimate.ieee_fp32
    monkeypatch.setattr(estimate, "ieee_fp32", lambda dev: entered.append(dev) or real(dev))
    model = conv_model().float()
    search = {"method": "search", "search_steps": 1, "search_restarts": 1}
    locrob.alpha_lim(model, images().float(), RADII, n_draws=3, device="cpu", **search)
    assert entered == [torch.device("cpu")]
    locrob.alpha_lim(
        model, images().float(), RADII, n_draws=3, device="cpu", forward_dtype="bfloat16"
    )
    assert entered == [torch.device("cpu")]
