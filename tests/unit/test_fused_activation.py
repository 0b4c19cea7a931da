"""The fused bias + ReLU: its backward passes gradcheck (a wrong one fails it), and the MLP trains with it."""
import io

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

from lightning_modules.networks.fused_activation import FusedBiasReLU, FusedBiasReLULayer
from lightning_modules.networks.mlp import MLP


class ForgetsTheMask(FusedBiasReLU):
    """The kind of bug gradcheck exists for: the gradient flows through where ReLU cut it off."""

    @staticmethod
    def backward(ctx, grad_output):
        return grad_output, grad_output.reshape(-1, grad_output.shape[-1]).sum(0)


# The MLP's settings that conf/model sets (the constructor has no default for them), plain ones here.
PLAIN = dict(dropout=0.0, residual=False, init="default")


def double_inputs(*shape):
    generator = torch.Generator().manual_seed(0)
    input = torch.randn(*shape, generator=generator, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(shape[-1], generator=generator, dtype=torch.float64, requires_grad=True)
    return input, bias


@pytest.mark.parametrize("shape", [(6, 5), (3, 4, 5)], ids=["batch_features", "batch_sequence_features"])
def test_gradcheck_passes_for_input_and_bias(shape):
    input, bias = double_inputs(*shape)
    assert gradcheck(FusedBiasReLU.apply, (input, bias), eps=1e-6, atol=1e-4)
    assert gradgradcheck(FusedBiasReLU.apply, (input, bias), eps=1e-6, atol=1e-4)


def test_gradcheck_fails_for_a_backward_that_forgets_the_mask():
    input, bias = double_inputs(6, 5)
    assert (input + bias <= 0).any()  # else the bug would not show
    assert not gradcheck(ForgetsTheMask.apply, (input, bias), eps=1e-6, atol=1e-4, raise_exception=False)


def test_matches_autograd_of_relu_of_sum_in_float32():
    torch.manual_seed(0)
    input, bias = torch.randn(32, 16, requires_grad=True), torch.randn(16, requires_grad=True)
    weights = torch.randn(32, 16)  # an uneven upstream gradient
    fused = FusedBiasReLU.apply(input, bias)
    fused_grads = torch.autograd.grad((fused * weights).sum(), (input, bias))
    reference = torch.relu(input + bias)
    reference_grads = torch.autograd.grad((reference * weights).sum(), (input, bias))
    assert torch.allclose(fused, reference)
    for fused_grad, reference_grad in zip(fused_grads, reference_grads):
        assert torch.allclose(fused_grad, reference_grad, atol=1e-6)


def test_only_the_needed_gradients_are_computed():
    input, bias = torch.randn(4, 3, requires_grad=True), torch.randn(3)  # a frozen bias
    FusedBiasReLU.apply(input, bias).sum().backward()
    assert input.grad is not None and bias.grad is None


def test_rejects_a_bias_that_does_not_match_the_features():
    with pytest.raises(ValueError, match="last dimension"):
        FusedBiasReLU.apply(torch.randn(4, 3), torch.randn(4))


def test_layer_bias_starts_like_linear_bias():
    torch.manual_seed(0)
    layer = FusedBiasReLULayer(1000, fan_in=64)
    assert layer.bias.shape == (1000,) and layer.bias.abs().max() <= 64 ** -0.5
    assert layer.bias.std().item() == pytest.approx(64 ** -0.5 / 3 ** 0.5, rel=0.1)  # uniform(+-b) has std b/sqrt(3)


def count_parameters(net):
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("batch_norm", [False, True])
def test_mlp_with_fused_activation_has_the_same_parameters_and_trains(batch_norm):
    plain = MLP([1, 8, 8], 10, **PLAIN, hidden_dims=[32, 16], activation="relu", batch_norm=batch_norm)
    torch.manual_seed(0)
    net = MLP([1, 8, 8], 10, **PLAIN, hidden_dims=[32, 16], activation="fused_bias_relu", batch_norm=batch_norm)
    assert count_parameters(net) == count_parameters(plain)
    block = net.features[0].layers
    assert block[0].bias is None and isinstance(block[-1], FusedBiasReLULayer)
    if batch_norm:  # Linear -> BatchNorm -> fused bias + ReLU
        assert isinstance(block[1], torch.nn.BatchNorm1d)
    images, labels = torch.randn(64, 1, 8, 8), torch.randint(0, 10, (64,))
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(images), labels)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] <= losses[0] / 2


def test_mlp_state_dict_round_trips_with_weights_only_load():
    torch.manual_seed(0)
    net = MLP([16], 4, **{**PLAIN, "init": "kaiming"}, hidden_dims=[8, 8], batch_norm=False,
              activation="fused_bias_relu")
    assert torch.count_nonzero(net.features[0].layers[1].bias) == 0  # kaiming zeroes biases, the fused ones too
    with torch.no_grad():
        net.features[0].layers[1].bias.uniform_()  # a bias the fresh network below cannot have by chance
    buffer = io.BytesIO()
    torch.save(net.state_dict(), buffer)
    buffer.seek(0)
    restored = MLP([16], 4, **PLAIN, hidden_dims=[8, 8], batch_norm=False, activation="fused_bias_relu")
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    x = torch.randn(5, 16)
    assert torch.equal(restored(x), net(x))
    assert {key for key in net.state_dict() if key.endswith("layers.1.bias")} == {
        "features.0.layers.1.bias", "features.1.layers.1.bias"}  # the fused layers' biases are saved
