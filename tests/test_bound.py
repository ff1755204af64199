"""The certified upper bound (``method="bound"``): sound above every ratio and every Jacobian
of the region, exact where the math says it is, refusing what it cannot bound."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import locrob
from locrob.errors import LocrobError
from locrob.models.architectures import PreActBlock
from locrob.models.l2nn import Center, NonexpansiveConv2d, NonexpansiveLinear, TwoSidedReLU
from locrob.models.merges import ConvexMerge


def _bound(model, x, radii, **options):
    return locrob.alpha_lim(model, x, radii, method="bound", device="cpu", **options)


def test_a_linear_map_gets_exactly_its_operator_norm():
    torch.manual_seed(0)
    linear = nn.Sequential(nn.Flatten(), nn.Linear(16, 10)).double()
    w = linear[1].weight.detach()
    x = torch.rand(4, 16, dtype=torch.float64)
    for norm, expected in (("l2", torch.linalg.matrix_norm(w, 2)), ("inf", w.abs().sum(1).max())):
        found = _bound(linear, x, [0.1, 2.0], norm=norm, output="logits", clamp=None)
        assert found.bound == "upper" and found.to_dict()["bound"] == "upper"
        assert found.curve.tolist() == pytest.approx([float(expected)] * 2, rel=1e-11)
        assert found.curve.min() >= expected  # rounded up, never down
        assert found.extra["global_bound"] == pytest.approx(float(expected), rel=1e-8)


def test_the_sigmoid_of_fig_2_meets_its_closed_form_from_above():
    """Over R = {-10, 10} the bound is the sigmoid's largest slope within r of a point,
    sigma'(max(0, 10 - r)), which bounds every secant (the closed-form alpha_lim)."""
    sigmoid = nn.Sequential(nn.Flatten(), nn.Sigmoid()).double()
    x = torch.tensor([-10.0, 10.0], dtype=torch.float64).view(2, 1, 1, 1)
    radii = [0.5, 5.0, 9.9, 10.0, 12.0]
    found = _bound(sigmoid, x, radii, output="logits", clamp=None)

    def slope(z: float) -> float:
        return 1 / (2 + math.exp(z) + math.exp(-z))

    def secant(r: float) -> float:  # sup over 0 < e <= r of (s(-10 + e) - s(-10)) / e
        grid = torch.linspace(1e-6, r, 20001, dtype=torch.float64)
        return float(
            ((torch.sigmoid(-10 + grid) - torch.sigmoid(torch.tensor(-10.0))) / grid).max()
        )

    for r, upper in zip(radii, found.curve.tolist(), strict=True):
        assert upper == pytest.approx(slope(max(0.0, 10 - r)), rel=1e-12)
        assert upper >= slope(max(0.0, 10 - r)) and upper >= secant(r)


def _chain(seed: int, kind: str) -> nn.Module:
    """A random network (fp64, eval mode) of one family of supported layers."""
    torch.manual_seed(seed)
    if kind == "dense":
        net = nn.Sequential(
            nn.Flatten(), nn.Linear(48, 12), nn.ReLU(), nn.Linear(12, 8), nn.Tanh(), nn.Linear(8, 5)
        )
    elif kind == "conv":
        net = nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1),
            nn.BatchNorm2d(4),
            nn.LeakyReLU(0.1),
            nn.MaxPool2d(2),
            nn.Conv2d(4, 4, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.AvgPool2d(1),
            nn.Flatten(),
            nn.Linear(4, 5),
        )
    elif kind == "l2nn":
        net = nn.Sequential(
            Center(),
            NonexpansiveConv2d(3, 3, 3),
            TwoSidedReLU(),
            nn.LPPool2d(2, 2),
            nn.Flatten(),
            NonexpansiveLinear(24, 5),
        )
    elif kind == "residual":
        block = PreActBlock(3, 4, stride=2)
        block.merge = ConvexMerge()
        net = nn.Sequential(
            PreActBlock(3, 3),
            block,
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(4, 5),
        )
    else:
        net = Functional()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.3, 0.3)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return net.double().eval()


class Functional(nn.Module):
    """Functional steps between modules, as in RobustBench's WideResNet."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.shortcut = nn.Conv2d(3, 4, 1)
        self.fc = nn.Linear(4 * 2 * 2, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.add(self.shortcut(x), F.relu(self.conv(x)))
        out = F.avg_pool2d(out, 2)
        out = F.dropout(out, p=0.3, training=self.training)
        return self.fc(out.view(out.size(0), -1))


KINDS = ["dense", "conv", "l2nn", "residual", "functional"]


def _jacobian_norm(model: nn.Module, z: torch.Tensor, output: str, p: float, q: float) -> float:
    def f(t: torch.Tensor) -> torch.Tensor:
        out = model(t)
        return (out.softmax(dim=1) if output == "softmax" else out).reshape(-1)

    j = torch.autograd.functional.jacobian(f, z).reshape(-1, z.numel())
    if (p, q) == (2, 2):
        return float(torch.linalg.matrix_norm(j, 2))
    return float(j.abs().sum(1).max())  # (inf, inf)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    kind=st.sampled_from(KINDS),
    norm=st.sampled_from(["l2", "inf"]),
    output=st.sampled_from(["softmax", "logits"]),
    radius=st.floats(1e-3, 1.0),
)
def test_the_bound_is_above_every_ratio_and_jacobian_in_the_region(
    seed, kind, norm, output, radius
):
    """Property: above the search's best ratio (lower bound) and above the exact Jacobian
    norm at random points of the region."""
    model = _chain(seed, kind)
    x = torch.rand(3, 3, 4, 4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    upper = _above_search_and_jacobians(model, x, radius, norm, output, seed)
    assert float(upper.curve[0]) <= upper.extra["global_bound"]


def _above_search_and_jacobians(model, x, radius, norm, output, seed):
    """The bound at ``radius``, checked above the search's best ratio and above the exact
    Jacobian norm at a random point of each region."""
    options = {"norm": norm, "output": output}
    upper = _bound(model, x, [radius], **options)
    lower = locrob.alpha_lim(
        model, x, [radius], method="search", n_draws=8, search_steps=10, seed=seed, **options
    )
    assert (upper.per_point >= lower.per_point * (1 - 1e-12)).all()
    p = 2.0 if norm == "l2" else math.inf
    g = torch.Generator().manual_seed(seed + 1)
    for i in range(len(x)):
        step = torch.randn(x[i : i + 1].shape, generator=g, dtype=torch.float64)
        step = (
            step
            / (step.norm() if p == 2 else step.abs().max())
            * radius
            * torch.rand(1, generator=g)
        )
        z = (x[i : i + 1] + step.double()).clamp(0, 1)
        assert _jacobian_norm(model, z, output, p, p) <= float(upper.per_point[0, i]) * (1 + 1e-12)
    return upper


def _node_values(model: nn.Module, graph, z: torch.Tensor) -> dict:
    """Every traced node's value at the inputs ``z``, by running the traced graph."""
    module = torch.fx.GraphModule(model, graph.placeholder.graph)
    seen = {}

    class Recorder(torch.fx.Interpreter):
        def run_node(self, n):
            seen[n] = out = super().run_node(n)
            return out

    Recorder(module).run(z)
    return seen


@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    kind=st.sampled_from(KINDS),
    norm=st.sampled_from(["l2", "inf"]),
    radius=st.floats(1e-3, 0.5),
)
def test_linear_relaxation_tightens_the_intervals_and_keeps_every_value(seed, kind, norm, radius):
    """Property: with back-substitution every node's interval lies within the interval
    pass's and still holds the node's value at random points of each region."""
    from locrob.alpha.bound import _forward
    from locrob.alpha.bound_graph import trace
    from locrob.alpha.bound_linear import Relaxed
    from locrob.alpha.settings import resolve

    model = _chain(seed, kind)
    x = torch.rand(3, 3, 4, 4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    graph = trace(model, x[:1])
    found = resolve(None, [radius], norm=norm, output="softmax")
    r = torch.full((len(x),), radius, dtype=torch.float64)
    plain = _forward(graph, x, r, found)
    record = Relaxed()
    tight = _forward(graph, x, r, found, record)
    g = torch.Generator().manual_seed(seed + 2)
    step = torch.randn(64, *x.shape, generator=g, dtype=torch.float64)
    size = step.flatten(2).norm(dim=2) if norm == "l2" else step.flatten(2).abs().amax(dim=2)
    scale = radius * torch.rand(64, len(x), generator=g, dtype=torch.float64) / size
    z = (x + step * scale.view(64, len(x), 1, 1, 1)).clamp(0, 1)
    values = [_node_values(model, graph, batch) for batch in z]
    for node, interval in tight.items():
        assert (interval.lower >= plain[node].lower - 1e-12).all(), node
        assert (interval.upper <= plain[node].upper + 1e-12).all(), node
        at = torch.stack([v[node] for v in values])
        assert (at >= interval.lower).all() and (at <= interval.upper).all(), node


def test_through_stable_relus_the_logits_range_is_the_composed_maps_over_the_ball():
    """With every ReLU's sign fixed over the region, the network is the linear map
    W2 D W1 there: back-substitution gives each logit's exact range over the L2 ball,
    value +- r * ||row||, where the interval pass gives more."""
    from locrob.alpha.bound import _forward
    from locrob.alpha.bound_graph import trace
    from locrob.alpha.bound_linear import Relaxed
    from locrob.alpha.settings import resolve

    torch.manual_seed(4)
    net = nn.Sequential(nn.Flatten(), nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)).double()
    net[1].bias.data = torch.linspace(-3, 3, 8, dtype=torch.float64)  # some on, some off
    x = torch.full((1, 6), 0.5, dtype=torch.float64)
    r, graph = 1e-3, trace(net, x)
    found = resolve(None, [r], norm="l2", output="softmax", clamp=None)
    radius = torch.tensor([r], dtype=torch.float64)
    record = Relaxed()
    logits = _forward(graph, x, radius, found, record)[graph.output]
    hidden = net[1](x)
    assert (hidden.abs() > 0.1).all(), "every ReLU stable over the ball"
    composed = (
        net[3].weight.detach() @ torch.diag((hidden[0] > 0).double()) @ net[1].weight.detach()
    )
    exact = torch.linalg.vector_norm(composed, dim=1) * r
    value = net(x)[0]
    assert logits.upper[0].tolist() == pytest.approx((value + exact).tolist(), rel=1e-12, abs=1e-13)
    assert logits.lower[0].tolist() == pytest.approx((value - exact).tolist(), rel=1e-12, abs=1e-13)
    assert (logits.upper[0] >= value + exact).all() and (logits.lower[0] <= value - exact).all()
    plain = _forward(graph, x, radius, found)[graph.output]
    assert (plain.upper[0] - value > 1.5 * exact).any()  # the intervals lose the correlation
    assert record.tightened == {graph.output.name}


def test_the_interval_closes_as_the_radius_shrinks():
    """At r -> 0 the region is the point: the bound meets the search's value (the Jacobian's
    norm at the worst point) on a small CNN, in L2 and Linf."""
    torch.manual_seed(0)
    model = locrob.load_model("small-cnn", num_classes=10, in_channels=3, image_size=8)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    model = model.double().eval()
    x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for norm in ("l2", "inf"):
        for output in ("softmax", "logits"):
            options = {"norm": norm, "output": output}
            upper = _bound(model, x, [1e-7], **options)
            exact = max(
                _jacobian_norm(
                    model, x[i : i + 1], output, *(2.0, 2.0) if norm == "l2" else (math.inf,) * 2
                )
                for i in range(len(x))
            )
            assert exact <= float(upper.curve[0]) <= exact * (1 + 1e-3), (norm, output)


def test_a_bound_in_float32_covers_the_float64_one():
    from locrob.alpha.bound import upper_bounds
    from locrob.alpha.settings import resolve

    model = _chain(3, "conv")
    x = torch.rand(4, 3, 4, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    for norm in ("l2", "inf"):
        settings = resolve(None, [1e-6, 0.05, 0.5], norm=norm)
        wide = upper_bounds(model, x, settings, dtype=torch.float32, skip_past_global=False).local
        exact = upper_bounds(model, x, settings, dtype=torch.float64, skip_past_global=False).local
        assert (wide.double() >= exact).all()
        assert (wide.double() <= exact * 1.01).all()  # rounding margins, not a different bound


def test_the_global_bound_is_the_product_of_the_layers_norms():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3)).double()
    x = torch.rand(2, 6, dtype=torch.float64)
    found = _bound(net, x, [0.5], output="softmax")
    norms = [float(torch.linalg.matrix_norm(net[i].weight.detach(), 2)) for i in (1, 3)]
    assert found.extra["global_bound"] == pytest.approx(0.5 * norms[0] * norms[1], rel=1e-8)


@pytest.mark.parametrize(
    ("module", "message"),
    [
        (
            nn.Sequential(nn.Flatten(), nn.Linear(16, 3), nn.GELU()),
            "no rule for module '2' \\(GELU\\)",
        ),
        (nn.Sequential(nn.Conv2d(1, 1, 1), nn.MaxPool2d(3, stride=2)), "stride = kernel"),
        (nn.Sequential(nn.BatchNorm2d(1, track_running_stats=False)), "running statistics"),
    ],
)
def test_an_unsupported_operation_is_refused_by_name(module, message):
    with pytest.raises(LocrobError, match=message):
        _bound(module.double(), torch.rand(2, 1, 4, 4, dtype=torch.float64), [0.1])


def test_a_function_in_the_forward_pass_without_a_rule_is_named():
    class Sine(nn.Module):
        def forward(self, x):
            return torch.sin(x).flatten(1)

    with pytest.raises(LocrobError, match=r"no rule for .*sin"):
        _bound(Sine(), torch.rand(2, 1, 2, 2, dtype=torch.float64), [0.1])


def test_alpha_bounds_gives_both_sides_and_the_metric_reports_the_interval():
    model = _chain(5, "conv")
    x = torch.rand(3, 3, 4, 4, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    both = locrob.alpha_bounds(model, x, [0.01, 0.1], n_draws=8, search_steps=5)
    assert both.lower.bound == "lower" and both.upper.bound == "upper"
    assert (both.upper.curve >= both.lower.curve).all() and (both.gap >= 1).all()
    low, high = both.alpha_at(0.1)
    assert low == float(both.lower.curve[1]) and high == float(both.upper.curve[1])
    assert "upper/lower" in str(both)
    with pytest.raises(LocrobError, match="give lower="):
        locrob.alpha_bounds(model, x, [0.1], method="sample")

    torch.manual_seed(0)
    small = locrob.load_model("small-cnn", num_classes=10, in_channels=3, image_size=32)
    options = {"max_examples": 2, "n_draws": 4, "radii": [0.01, 0.1], "at": [0.1], "bound": True}
    report = locrob.evaluate(
        small, "digits", ["local-robustness"], metric_options={"local-robustness": options}
    )
    result = report.metrics["local-robustness"]
    lower, upper = result.summary["alpha@0.1"], result.summary["alpha_upper@0.1"]
    assert upper >= lower > 0
    assert result.summary["alpha_gap@0.1"] == pytest.approx(upper / lower)
    assert result.details["upper"]["bound"] == "upper"


@pytest.mark.parametrize(
    ("c_in", "c_out", "k", "n", "stride", "padding"),
    [(3, 4, 3, 6, 1, 1), (2, 3, 3, 5, 2, 1), (3, 2, 1, 4, 1, 0), (2, 2, 3, 5, 1, 0)],
)
def test_a_convolution_norm_from_the_circular_one_bounds_the_exact_norm(
    c_in, c_out, k, n, stride, padding
):
    from locrob.alpha.bound_graph import circular_norm

    torch.manual_seed(c_in * 10 + n)
    w = torch.randn(c_out, c_in, k, k, dtype=torch.float64)

    def conv(x):
        return F.conv2d(x, w, None, stride, padding).reshape(-1)

    zero = torch.zeros(1, c_in, n, n, dtype=torch.float64)
    exact = torch.linalg.matrix_norm(
        torch.autograd.functional.jacobian(conv, zero).reshape(-1, zero.numel()), 2
    )
    assert float(exact) <= circular_norm(w, (n, n)) <= 1.5 * float(exact)


def test_the_largest_eigenvalue_is_certified_where_power_iteration_ranks_wrongly():
    """Eigenvalues 1e-6 apart at the top of each matrix, above a second one only 1e-3 lower:
    a few power iterations cannot tell which matrix holds the largest, so the Cholesky
    certificate must catch the matrices ranked too low."""
    from locrob.alpha.bound_graph import largest_eigenvalue

    g = torch.Generator().manual_seed(0)
    n, batch = 12, 40
    tops = 1 + 1e-6 * torch.randperm(batch, generator=g, dtype=torch.float64)
    spectra = torch.rand(batch, n, generator=g, dtype=torch.float64) * 0.5
    spectra[:, -2] = tops * (1 - 1e-3)
    spectra[:, -1] = tops
    q, _ = torch.linalg.qr(torch.randn(batch, n, n, generator=g, dtype=torch.complex128))
    gram = q @ torch.diag_embed(spectra.to(torch.complex128)) @ q.mH
    largest = largest_eigenvalue(gram)
    # the matrices' own rounding moves their eigenvalues by about n u
    assert float(tops.max()) * (1 - 1e-13) <= largest <= float(tops.max()) * (1 + 2e-8)


class _InPlace(nn.Module):
    """Reads a tensor that an in-place ReLU then overwrites."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(16, 2)

    def forward(self, x):
        y = self.fc(x.flatten(1))
        z = F.relu(y, inplace=True)
        return y + z


def _hooked() -> nn.Module:
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    net[1].register_forward_hook(lambda m, i, o: 10 * o)
    return net


def _hooked_container() -> nn.Module:
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    net.register_forward_hook(lambda m, i, o: 10 * o)  # fx traces through it: unseen
    return net


def _own_forward() -> nn.Module:
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    net[1].forward = lambda t: 10 * F.linear(t, net[1].weight, net[1].bias)
    return net


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: nn.Sequential(nn.Flatten(), nn.LeakyReLU(-1.0)), "slope >= 0"),
        (lambda: nn.Sequential(nn.AvgPool2d(2, divisor_override=1), nn.Flatten()), "divisor"),
        (lambda: nn.Sequential(nn.AvgPool2d(3, ceil_mode=True), nn.Flatten()), "ceil_mode"),
        (_hooked, "module '1' has forward hooks"),
        (_hooked_container, "module 'Sequential' has forward hooks"),
        (_own_forward, "has its own forward"),
        (_InPlace, "overwrites a tensor that another operation also reads"),
        (lambda: nn.Sequential(nn.Flatten(0)), "mixes the examples"),
    ],
    ids=[
        "negative-slope",
        "divisor",
        "ceil",
        "hook",
        "container-hook",
        "own-forward",
        "in-place",
        "batch-mix",
    ],
)
def test_what_would_make_the_bound_wrong_is_refused(make, message):
    with pytest.raises(LocrobError, match=message):
        _bound(make().double(), torch.rand(2, 1, 4, 4, dtype=torch.float64), [0.1])


def test_a_defenses_watching_hooks_leave_the_bound_as_it_is():
    """The Laplacian defense's hooks record activations (marked observers): a model trained
    with them is bounded, and exactly as without them."""
    from locrob.defenses.laplacian import Laplacian

    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3)
    ).double()
    x = torch.rand(3, 1, 4, 4, dtype=torch.float64)
    plain = _bound(net, x, [0.01, 0.1])
    Laplacian().prepare_model(net)
    assert net._forward_pre_hooks and net[2]._forward_hooks
    assert torch.equal(_bound(net, x, [0.01, 0.1]).per_point, plain.per_point)


def _worst_jacobian(model, x, output="logits", p=2.0, q=2.0) -> float:
    def f(t):
        out = model(t)
        return (out.softmax(dim=1) if output == "softmax" else out).reshape(-1)

    j = torch.autograd.functional.jacobian(f, x).reshape(-1, x.numel())
    if (p, q) == (math.inf, 2.0):
        return float(torch.linalg.vector_norm(j.abs().sum(1)))  # attained at a sign vector
    return float(torch.linalg.matrix_norm(j, 2))


def test_cases_a_review_found_are_bounded_from_above():
    """Batch norm over (B, C, L), a convex merge called with keywords, tanh far from 0, and
    the Linf -> L2 change of norm over a multi-dimensional output."""
    bn = nn.BatchNorm1d(2).double().eval()
    bn.running_var.copy_(torch.tensor([0.01, 100.0]))
    x = torch.rand(1, 2, 2, dtype=torch.float64)
    found = _bound(nn.Sequential(bn, nn.Flatten()), x, [0.01], output="logits", clamp=None)
    assert float(found.curve[0]) >= _worst_jacobian(nn.Sequential(bn, nn.Flatten()), x) > 9

    class KeywordMerge(nn.Module):
        def __init__(self):
            super().__init__()
            self.merge = ConvexMerge()
            self.merge.weight.data = torch.tensor([1.0, 0.0])

        def forward(self, t):
            t = t.flatten(1)
            return torch.relu(self.merge(shortcut=t, branch=10 * t))

    merged = KeywordMerge().double()
    x = torch.rand(1, 1, 2, 2, dtype=torch.float64) + 0.1
    found = _bound(merged, x, [0.01], output="logits", clamp=None)
    assert float(found.curve[0]) >= _worst_jacobian(merged, x) == pytest.approx(10.0)

    tanh = nn.Sequential(nn.Flatten(), nn.Tanh()).double()
    x = torch.full((1, 1, 1, 1), 20.0, dtype=torch.float64)
    found = _bound(tanh, x, [1e-9], output="logits", clamp=None)
    assert float(found.curve[0]) >= 1 / math.cosh(20.0 - 1e-9) ** 2 > 0

    conv = nn.Sequential(nn.Conv2d(1, 1, 1, bias=False), nn.ReLU()).double()
    conv[0].weight.data.fill_(1.0)
    x = torch.rand(1, 1, 2, 2, dtype=torch.float64) + 0.1
    found = _bound(conv, x, [0.01], norm="inf", output_norm="l2", output="logits", clamp=None)
    assert found.extra["global_bound"] >= 2.0 and float(found.curve[0]) >= 2.0


def test_layerwise_certified_side_composes_the_stages_bounds():
    """Each stage's bound over the ball its input can reach; their product bounds alpha_lim
    from above, as the end-to-end bound does; on linear stages both are products of sigma_max."""
    torch.manual_seed(0)
    chain = nn.Sequential(nn.Flatten(), nn.Linear(12, 6), nn.Linear(6, 4)).double()
    x = torch.rand(3, 12, dtype=torch.float64)
    found = locrob.layerwise_alpha(
        chain, x, [0.1, 0.5], layers=["1", "2"], bound=True, output="logits", clamp=None, n_draws=8
    )
    sigmas = [float(torch.linalg.matrix_norm(chain[i].weight.detach(), 2)) for i in (1, 2)]
    up = found.upper
    assert up.per_layer[:, 0].tolist() == pytest.approx(sigmas, rel=1e-9)
    assert up.composed.tolist() == pytest.approx([sigmas[0] * sigmas[1]] * 2, rel=1e-9)
    assert (
        up.layer_radii[1] == torch.tensor([0.1, 0.5], dtype=torch.float64) * up.per_layer[0]
    ).all()
    assert (up.composed >= found.end_to_end.curve).all()
    assert (up.end_to_end.curve >= found.end_to_end.curve).all()
    assert "certified upper bounds:" in str(found) and "upper" in found.to_dict()

    model = _chain(1, "conv")
    x = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    found = locrob.layerwise_alpha(model, x, [0.05], bound=True, n_draws=8)
    assert float(found.upper.composed[0]) >= float(found.end_to_end.curve[0])
    assert float(found.upper.end_to_end.curve[0]) >= float(found.end_to_end.curve[0])


@pytest.mark.parametrize(
    ("conv", "size"),
    [
        (nn.Conv2d(3, 4, 3, stride=2, padding=1), 7),
        (nn.Conv2d(3, 4, 3, stride=2, padding=1), 8),
        (nn.Conv2d(4, 6, 5, stride=3, padding=2, dilation=2, groups=2), 11),
        (nn.Conv2d(2, 2, 1, stride=2), 5),
    ],
)
def test_a_convolutions_written_transpose_is_its_adjoint(conv, size):
    """<A v, u> = <v, A^T u>: the transposed convolution the backward pass uses (with the
    output padding a stride leaves) is the convolution's adjoint, on odd sizes too."""
    from locrob.alpha.bound_graph import trace

    net = nn.Sequential(conv).double()
    x = torch.rand(2, conv.in_channels, size, size, dtype=torch.float64)
    (step,) = trace(net, x[:1]).steps
    u = torch.randn_like(net(x))
    forward, backward = step.rule.apply, step.rule.transposed[0]
    assert backward(u).shape == x.shape
    assert float((forward(x) * u).sum()) == pytest.approx(float((x * backward(u)).sum()), rel=1e-12)
    absolute = step.rule.transposed[1](u.abs())
    expected = torch.autograd.functional.vjp(step.rule.apply_abs, x, u.abs())[1]
    assert torch.allclose(absolute, expected, rtol=1e-12, atol=1e-12)


def test_the_result_says_where_the_linear_pass_ran_and_where_the_global_bound_stood():
    """Small radii: the linear pass runs (and is named); a radius where a point's local
    bound reached the global one ends that point's local work, the global bound standing."""
    from locrob.alpha.bound import upper_bounds
    from locrob.alpha.settings import resolve

    model = _chain(5, "dense")
    x = torch.rand(3, 3, 4, 4, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    settings = resolve(None, [1e-3, 0.05, 50.0, 100.0], norm="l2", output="softmax")
    found = upper_bounds(model, x, settings)
    assert "linear relaxation (CROWN) at" in found.pre_activations
    assert torch.isfinite(found.local[:3]).all()  # 50 is the first radius at the global bound
    assert (found.local[2] >= found.global_bound).all()
    assert torch.isinf(found.local[3]).all()  # not bounded locally after that
    assert (found.per_point[3] == found.global_bound).all()
    full = upper_bounds(model, x, settings, skip_past_global=False)
    assert (full.local[3] >= found.global_bound).all()  # what was skipped would not have helped
    assert torch.equal(full.per_point, found.per_point)
    plain = upper_bounds(model, x, settings, linear=False)
    assert plain.pre_activations.startswith("interval bound propagation")
    assert "CROWN" not in plain.pre_activations
    assert (found.per_point <= plain.per_point).all()


def test_tied_max_pool_windows_pass_one_row_at_a_time(monkeypatch):
    """A window whose four inputs tie (a zero image, a conv of ones with bias 1) follows one
    input at a time: F = max of four box sums, Lipschitz constant 3 (the 3x3 box). Pulled
    back at once, each input pixel's derivative lies between the four boxes' smallest and
    largest value there (4 pixels in every box, 5 in some): sqrt(5.25) + sqrt(1.25) = 3.41.
    Step by step, each tied input gets [0, 1] and the bound is the boxes' sum's norm, 9."""
    import locrob.alpha.bound as bound

    conv = nn.Conv2d(1, 1, 3, padding=1)
    conv.weight.data.fill_(1.0)
    conv.bias.data.fill_(1.0)
    head = nn.Linear(4, 1, bias=False)
    head.weight.data = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    net = nn.Sequential(conv, nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), head).double()
    x = torch.zeros(1, 1, 4, 4, dtype=torch.float64)
    options = {"output": "logits", "clamp": None}
    hull = float(_bound(net, x, [1e-9], **options).curve[0])
    assert hull == pytest.approx(math.sqrt(5.25) + math.sqrt(1.25), rel=1e-12)
    nudged = x.clone()
    nudged[0, 0, 2, 2] = 1e-10  # only the box around (1, 1) reaches it: that input wins
    assert hull >= _worst_jacobian(net, nudged) == pytest.approx(3.0)
    monkeypatch.setattr(bound, "window_hulls", lambda graph: {})
    assert float(_bound(net, x, [1e-9], **options).curve[0]) == pytest.approx(9.0, rel=1e-12)


def _pooled(seed: int, stride: int, padding: int, leak: float, pool: int) -> nn.Module:
    """conv -> batch norm -> (leaky) ReLU -> max pool -> dense, random, fp64."""
    torch.manual_seed(seed)
    body = nn.Sequential(
        nn.Conv2d(2, 3, 3, stride=stride, padding=padding),
        nn.BatchNorm2d(3),
        nn.LeakyReLU(leak),
        nn.MaxPool2d(pool),  # 3: the rows and columns past the last window are dropped
        nn.Flatten(),
    )
    body[1].running_mean.uniform_(-0.3, 0.3)
    body[1].weight.data.uniform_(-1.5, 1.5)  # negative scales fold into the kernel too
    features = body(torch.zeros(1, 2, 8, 8)).shape[1]
    return nn.Sequential(*body, nn.Linear(features, 4)).double().eval()


@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    stride=st.sampled_from([1, 2]),
    padding=st.sampled_from([0, 1]),
    leak=st.sampled_from([0.0, 0.2]),
    pool=st.sampled_from([2, 3]),
    norm=st.sampled_from(["l2", "inf"]),
    output=st.sampled_from(["softmax", "logits"]),
    radius=st.floats(1e-7, 0.5),
)
def test_the_bound_holds_over_tied_windows(seed, stride, padding, leak, pool, norm, output, radius):
    """Property: on images of flat 4x4 blocks (max-pool windows tie exactly, as on digits'
    backgrounds), above the search and the Jacobian norm at random points of the region."""
    model = _pooled(seed, stride, padding, leak, pool)
    g = torch.Generator().manual_seed(seed)
    blocks = (torch.rand(3, 2, 2, 2, generator=g, dtype=torch.float64) > 0.5).double()
    x = blocks.repeat_interleave(4, dim=2).repeat_interleave(4, dim=3)
    _above_search_and_jacobians(model, x, radius, norm, output, seed)
