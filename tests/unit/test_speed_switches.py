"""The fast-CIFAR recipe's pieces on the CPU: the whitening layer, channels_last, bf16 autocast, test-time flip,
weight EMA, and feature maps recorded from named layers."""
import pytest
import pytorch_lightning as pl
import torch

from lightlab.base.errors import UserError
from lightlab.callbacks.feature_maps import FeatureMaps
from lightlab.run.compose import compose_config
from lightning_modules.networks.fast_cifar_net import FastCIFARNet
from lightning_modules.tasks.classification import ClassificationModule
from run import build
from tests.conftest import write_cifar10

SMALL_FAST_NET = ["model=fast_cifar", "model.widths=[8,16,16]"]


@pytest.fixture
def cifar_data(tmp_path):
    write_cifar10(tmp_path / "data", per_batch=64)
    return tmp_path / "data"


def built(tmp_path, data, *overrides):
    cfg = compose_config([f"paths.data_dir={data}", f"paths.log_dir={tmp_path / 'logs'}", "data=cifar10",
                          "data.val_size=64", "data.batch_size=32", "data.eval_batch_size=64", "data.download=false",
                          "trainer.max_epochs=1", "trainer.num_sanity_val_steps=0", "logger=none", *overrides],
                         output_dir=str(tmp_path / "run"))
    return build(cfg)


def smooth_images(count: int) -> torch.Tensor:
    """Images whose neighbouring pixels and channels are strongly correlated, as in natural images."""
    base = torch.randn(count, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    images = torch.nn.functional.interpolate(base, size=32, mode="bilinear")
    noise = torch.randn(count, 2, 32, 32, generator=torch.Generator().manual_seed(1))
    return torch.cat([images, 0.8 * images + 0.2 * noise[:, :1], 0.5 * images + 0.1 * noise[:, 1:]], dim=1)


def test_whitening_layer_decorrelates_the_patches_it_was_computed_from():
    net = FastCIFARNet([3, 32, 32], 10)
    images = smooth_images(200)
    net.initialize_from_data(images)
    with torch.no_grad():
        outputs = net.whiten(images) - net.whiten.bias[None, :, None, None]
    half = outputs[:, :12].permute(0, 2, 3, 1).reshape(-1, 12)  # the eigenvector filters (the rest: their negatives)
    covariance = half.T @ half / len(half)
    # 1/sqrt(eigenvalue + epsilon): unit variance, up to epsilon's share of each direction's variance
    torch.testing.assert_close(covariance, torch.diag(covariance.diag()), atol=1e-3, rtol=0)
    assert covariance.diag().min() > 0.5 and covariance.diag().max() < 1.0 + 1e-4
    torch.testing.assert_close(outputs[:, 12:], -outputs[:, :12])
    assert not net.whiten.weight.requires_grad and net.whitening_from_data


def test_fit_whitens_from_the_training_data_once_and_never_over_loaded_weights(tmp_path, cifar_data):
    datamodule, module, trainer = built(tmp_path, cifar_data, *SMALL_FAST_NET, "trainer.limit_train_batches=1",
                                        "trainer.limit_val_batches=1", "callbacks=none")
    trainer.fit(module, datamodule=datamodule)
    reference = FastCIFARNet([3, 32, 32], 10, widths=[8, 16, 16])
    reference.initialize_from_data(datamodule.training_sample(5000))
    torch.testing.assert_close(module.net.whiten.weight, reference.whiten.weight)

    # Weights loaded before fit (init_from, a checkpoint) carry the flag: their whitening is kept.
    datamodule, again, trainer = built(tmp_path, cifar_data, *SMALL_FAST_NET, "trainer.limit_train_batches=1",
                                       "trainer.limit_val_batches=0", "callbacks=none", "data.split_seed=1")
    again.net.load_state_dict(module.net.state_dict())
    trainer.fit(again, datamodule=datamodule)
    torch.testing.assert_close(again.net.whiten.weight, module.net.whiten.weight)


def test_channels_last_converts_weights_and_inputs_and_computes_the_same(tmp_path, cifar_data):
    _, fast, _ = built(tmp_path, cifar_data, "model=cnn", "channels_last=true")
    _, plain, _ = built(tmp_path, cifar_data, "model=cnn", "channels_last=false")
    plain.load_state_dict(fast.state_dict())
    conv = fast.net.features[0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    images = torch.randn(4, 3, 32, 32)
    fast.eval(), plain.eval()
    with FeatureMaps(fast.net, ["features.0"]) as fast_maps, FeatureMaps(plain.net, ["features.0"]) as plain_maps:
        torch.testing.assert_close(fast(images), plain(images), atol=1e-5, rtol=1e-5)
    assert fast_maps["features.0"].is_contiguous(memory_format=torch.channels_last)
    assert plain_maps["features.0"].is_contiguous()


@pytest.mark.parametrize("precision,dtype", [("bf16-mixed", torch.bfloat16), ("32-true", torch.float32)])
def test_bf16_mixed_runs_convolutions_in_bfloat16_on_the_cpu(precision, dtype, tmp_path, cifar_data):
    datamodule, module, trainer = built(tmp_path, cifar_data, *SMALL_FAST_NET, "channels_last=true", "callbacks=none",
                                        f"trainer.precision={precision}", "trainer.limit_train_batches=2",
                                        "trainer.limit_val_batches=0")
    with FeatureMaps(module.net, ["features.1.0", "classifier"]) as maps:
        trainer.fit(module, datamodule=datamodule)
    assert maps["features.1.0"].dtype == dtype and maps["classifier"].dtype == dtype
    assert module.net.classifier.weight.dtype == torch.float32  # mixed precision: weights stay float32
    assert torch.isfinite(trainer.callback_metrics["train/loss"])


def test_test_time_flip_scores_image_and_mirror_alike(tmp_path, cifar_data):
    _, module, _ = built(tmp_path, cifar_data, "model=cnn", "+lightning_module.test_time_flip=true")
    module.eval()
    images = torch.randn(6, 3, 32, 32)
    expected = (module(images) + module(images.flip(-1))) / 2
    torch.testing.assert_close(module.scores(images), expected)
    torch.testing.assert_close(module.scores(images.flip(-1)), module.scores(images))
    assert not torch.allclose(module(images), expected)  # the flip changed the scores


def test_test_time_flip_is_refused_for_inputs_that_are_not_images():
    with pytest.raises(UserError, match="test_time_flip=true mirrors images.*shape \\[50\\]"):
        ClassificationModule(net={"_target_": "lightning_modules.networks.mlp.MLP"}, optimizer={}, loss={},
                             input_shape=[50], num_classes=2, test_time_flip=True)


class WeightsAfterEachStep(pl.Callback):
    def __init__(self):
        self.weights = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.weights.append({k: v.detach().clone() for k, v in pl_module.net.state_dict().items()})


def test_ema_averages_weights_and_checkpoints_and_tests_the_average(tmp_path, cifar_data):
    decay = 0.5
    datamodule, module, trainer = built(tmp_path, cifar_data, "model=cnn", "callbacks=ema", "scheduler=none",
                                        f"callbacks.weight_averaging.decay={decay}", "trainer.limit_train_batches=3",
                                        "trainer.limit_val_batches=1")
    recorder = WeightsAfterEachStep()
    trainer.callbacks.insert(0, recorder)  # before the EMA callback: the weights it averages
    trainer.fit(module, datamodule=datamodule)
    first, second, third = (step["features.0.weight"] for step in recorder.weights)
    expected = decay * (decay * first + (1 - decay) * second) + (1 - decay) * third
    torch.testing.assert_close(module.net.state_dict()["features.0.weight"], expected)  # fit ends on the average

    checkpoint = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    torch.testing.assert_close(checkpoint["state_dict"]["net.features.0.weight"], expected)
    torch.testing.assert_close(checkpoint["current_model_state"]["net.features.0.weight"], third)
    # Testing the checkpoint scores the averaged weights it holds (Lightning's callback would reload the raw ones).
    trainer.test(module, datamodule=datamodule, ckpt_path=str(tmp_path / "run" / "checkpoints" / "last.ckpt"),
                 verbose=False)
    torch.testing.assert_close(module.net.state_dict()["features.0.weight"], expected)


def test_feature_maps_record_named_layers_and_leave_no_hooks():
    net = FastCIFARNet([3, 32, 32], 10, widths=[8, 16, 16])
    with FeatureMaps(net, ["whiten", "features.2"]) as maps:
        net(torch.randn(2, 3, 32, 32))
    assert maps["whiten"].shape == (2, 24, 31, 31) and maps["features.2"].shape == (2, 16, 7, 7)
    assert not net.whiten._forward_hooks and not net.features[2]._forward_hooks
    with pytest.raises(UserError, match="no layer named 'features.9' in FastCIFARNet. Its layers: whiten, features"):
        FeatureMaps(net, ["features.9"])
