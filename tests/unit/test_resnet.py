"""ResNet: torchvision's parameter counts, where each stem leaves the image, shortcuts, zero-init, and the configs."""
import pytest
import torch
from hydra.utils import instantiate

from lightlab.run.compose import compose_config
from lightning_modules.networks.resnet import ResidualBlock, ResNet


@pytest.mark.parametrize("blocks_per_stage,expected", [([2, 2, 2, 2], 11_689_512), ([3, 4, 6, 3], 21_797_672)])
def test_parameter_count_matches_torchvision(blocks_per_stage, expected):
    # torchvision's published resnet18 / resnet34 counts (3x224x224, 1000 classes).
    net = ResNet([3, 224, 224], 1000, blocks_per_stage=blocks_per_stage, stem="imagenet")
    assert sum(p.numel() for p in net.parameters()) == expected


def stage_one_sizes(net: ResNet, image_size: int) -> tuple[list[int], list[int]]:
    """The spatial size entering and leaving the first stage, read with a forward hook."""
    seen = {}
    hook = net.stages[0].register_forward_hook(
        lambda module, inputs, output: seen.update(into=list(inputs[0].shape[2:]), out=list(output.shape[2:])))
    net.eval()
    with torch.no_grad():
        net(torch.randn(1, net.stem[0].in_channels, image_size, image_size))
    hook.remove()
    return seen["into"], seen["out"]


def test_cifar_stem_keeps_the_image_size_and_imagenet_stem_quarters_it():
    assert (stage_one_sizes(ResNet([3, 32, 32], 10, blocks_per_stage=[2, 2, 2, 2], stem="cifar"), 32)
            == ([32, 32], [32, 32]))
    assert (stage_one_sizes(ResNet([3, 224, 224], 10, blocks_per_stage=[2, 2, 2, 2], stem="imagenet"), 224)
            == ([56, 56], [56, 56]))
    with pytest.raises(ValueError, match="stem must be"):
        ResNet([3, 32, 32], 10, blocks_per_stage=[2, 2, 2, 2], stem="tiny")


def test_shortcut_is_identity_exactly_where_stride_one_and_widths_match():
    net = ResNet([3, 32, 32], 10, blocks_per_stage=[2, 2, 2, 2])
    blocks = [block for stage in net.stages for block in stage]
    kinds = [isinstance(block.shortcut, torch.nn.Identity) for block in blocks]
    # Stage 1's first block keeps 64 channels at stride 1; each later stage's first block downsamples and widens.
    assert kinds == [True, True, False, True, False, True, False, True]
    for block in blocks:
        same = block.conv1.stride == (1, 1) and block.conv1.in_channels == block.conv1.out_channels
        assert isinstance(block.shortcut, torch.nn.Identity) == same
    assert isinstance(ResidualBlock(8, 8).shortcut, torch.nn.Identity)
    assert not isinstance(ResidualBlock(8, 16).shortcut, torch.nn.Identity)  # widths change at stride 1
    assert not isinstance(ResidualBlock(8, 8, stride=2).shortcut, torch.nn.Identity)  # size changes


@pytest.mark.parametrize("zero_init", [True, False])
def test_zero_init_last_bn_starts_every_block_as_relu_of_its_shortcut(zero_init):
    torch.manual_seed(0)
    net = ResNet([3, 32, 32], 10, blocks_per_stage=[2, 2], widths=[8, 16], zero_init_last_bn=zero_init)
    net.train()  # batch statistics: the bias of a zero-weight BN is still 0
    x = net.stem(torch.randn(4, 3, 32, 32))
    matches = []
    for stage in net.stages:
        for block in stage:
            with torch.no_grad():
                matches.append(torch.allclose(block(x), torch.relu(block.shortcut(x)), atol=1e-6))
                x = block(x)
    assert matches == [zero_init] * 4
    identity_block = net.stages[0][1]
    assert isinstance(identity_block.shortcut, torch.nn.Identity)
    y = torch.randn(2, 8, 5, 5)
    with torch.no_grad():
        assert torch.allclose(identity_block(y), torch.relu(y), atol=1e-6) == zero_init


def test_mismatched_stage_lists_are_refused():
    with pytest.raises(ValueError, match="blocks_per_stage has 3 entries for 4 widths"):
        ResNet([3, 32, 32], 10, blocks_per_stage=[2, 2, 2])


@pytest.mark.parametrize("model,blocks", [("resnet18", [2, 2, 2, 2]), ("resnet34", [3, 4, 6, 3])])
def test_config_composes_and_builds_for_mnist(model, blocks, tmp_path):
    cfg = compose_config([f"model={model}", "data=mnist"], output_dir=str(tmp_path))
    net = instantiate(cfg.model, input_shape=[1, 28, 28], num_classes=10, _convert_="all")
    assert isinstance(net, ResNet)
    assert [len(stage) for stage in net.stages] == blocks
    assert net.stem[0].in_channels == 1 and net.stem[0].kernel_size == (3, 3)  # cifar stem by default
    net.eval()
    with torch.no_grad():
        assert net(torch.randn(2, 1, 28, 28)).shape == (2, 10)
