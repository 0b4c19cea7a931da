"""The image networks: every image model config builds for every image data config, learns, and follows its settings."""
import pytest
import torch
from hydra.utils import instantiate

from lightlab.run.compose import compose_config
from lightning_modules.networks.cnn import BasicCNN
from lightning_modules.networks.mlp import MLP, HiddenBlock
from tests.conftest import options_reading_token_ids

# Image networks and image data (known from their _target_); the sequence models and text data
# are tested over each other in tests/unit/test_text.py.

MODELS = options_reading_token_ids("model")[1]
DATA = options_reading_token_ids("data")[1]


@pytest.mark.parametrize("data", DATA)
@pytest.mark.parametrize("model", MODELS)
def test_model_builds_for_data_and_one_step_lowers_the_loss(model, data, tmp_path):
    cfg = compose_config([f"model={model}", f"data={data}"], output_dir=str(tmp_path))
    datamodule_class = instantiate(cfg.data, _convert_="all")
    torch.manual_seed(0)
    net = instantiate(cfg.model, input_shape=list(datamodule_class.input_shape),
                      num_classes=datamodule_class.num_classes, _convert_="all")
    images = torch.randn(16, *datamodule_class.input_shape)
    labels = torch.randint(0, datamodule_class.num_classes, (16,))
    assert net(images).shape == (16, datamodule_class.num_classes)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01)
    # Training mode (BatchNorm normalises by the batch, as in the step) without dropout's noise: the loss
    # before and after the step is then measured the same way on the same batch.
    net.train()
    for module in net.modules():
        if isinstance(module, torch.nn.Dropout):
            module.eval()
    before = torch.nn.functional.cross_entropy(net(images), labels)
    optimizer.zero_grad()
    before.backward()
    optimizer.step()
    assert torch.nn.functional.cross_entropy(net(images), labels) < before


def test_seed_networks_are_settings_of_the_mlp():
    mnist_classifier = MLP([1, 28, 28], 10, hidden_dims=[512, 256, 128], dropout=0.3, batch_norm=False, residual=False,
                           init="default")
    widths = [(b.layers[0].in_features, b.layers[0].out_features) for b in mnist_classifier.features]
    assert widths == [(784, 512), (512, 256), (256, 128)]
    dropouts = [any(isinstance(m, torch.nn.Dropout) for m in b.layers) for b in mnist_classifier.features]
    assert dropouts == [True, True, False]  # the seed's MNISTClassifier: no dropout after the last hidden layer
    with_bn = MLP([784], 10, hidden_dims=[64, 64], batch_norm=True, dropout=0.0, residual=False, init="default")
    assert all(isinstance(b.layers[1], torch.nn.BatchNorm1d) for b in with_bn.features)


def test_residual_blocks_add_their_input_only_where_widths_match():
    block = HiddenBlock(8, 8, "relu", 0.0, batch_norm=False, residual=True)
    x = torch.randn(4, 8)
    assert torch.allclose(block(x), block.layers(x) + x)
    assert not HiddenBlock(8, 6, "relu", 0.0, batch_norm=False, residual=True).residual


@pytest.mark.parametrize("init,expected_std", [("kaiming", (2 / 784) ** 0.5), ("xavier", (2 / (784 + 512)) ** 0.5)])
def test_weight_initialisation_follows_config(init, expected_std):
    torch.manual_seed(0)
    plain = dict(hidden_dims=[512], dropout=0.0, batch_norm=False, residual=False)
    first = MLP([784], 10, **plain, init=init).features[0].layers[0]
    assert first.weight.std().item() == pytest.approx(expected_std, rel=0.05)
    assert torch.count_nonzero(first.bias) == 0
    default = MLP([784], 10, **plain, init="default").features[0].layers[0]  # PyTorch's: uniform(+-1/sqrt(fan_in))
    assert default.weight.abs().max().item() <= 784 ** -0.5 + 1e-6


@pytest.mark.parametrize("input_shape,head_inputs", [([1, 28, 28], 128 * 7 * 7), ([3, 32, 32], 128 * 8 * 8)])
def test_basic_cnn_sizes_its_head_from_the_image(input_shape, head_inputs):
    net = BasicCNN(input_shape, 10)  # the seed's: 32-64-128 channels, pools after the first two blocks
    assert net.classifier[1].in_features == head_inputs  # the seed hand-wrote 128 * 8 * 8 for CIFAR
    assert [m.out_channels for m in net.features if isinstance(m, torch.nn.Conv2d)] == [32, 64, 128]
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in net.features) == 2
    assert net(torch.randn(2, *input_shape)).shape == (2, 10)
    with pytest.raises(ValueError, match="pool_after has 2 entries for 3 conv blocks"):
        BasicCNN(input_shape, 10, pool_after=[True, True])
