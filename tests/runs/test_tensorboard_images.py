"""TensorBoard's IMAGES, TEXT and HISTOGRAMS of a run (lightlab/callbacks/evaluation_images.py,
lightlab/callbacks/parameter_histograms.py): short real runs of run.py on tiny data, their event files read back with
TensorBoard's own reader."""
import io

import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from datamodules.vocabulary import Vocabulary
from lightlab.callbacks.pictures import channel_grid, confusion_image, misclassified_table, png_bytes
from tests.conftest import quick_overrides, run_cli, write_tiny_mnist, write_tiny_text

# model=cnn, small: two blocks of 4 and 8 channels, both pooled (28x28 -> 7x7)
SMALL_CNN = ["model=cnn", "model.channels=[4,8]", "model.pool_after=[true,true]", "model.head_width=16"]
STEPS_PER_EPOCH = 6  # 192 training images (256 less 64 for validation) in batches of 32


def cnn_overrides(data, logs) -> list[str]:
    return [o for o in quick_overrides(data, logs) if not o.startswith("model.")] + SMALL_CNN


def read_events(run_dir) -> EventAccumulator:
    events = EventAccumulator(str(run_dir), size_guidance={"images": 0, "histograms": 0, "tensors": 0})  # 0: all
    events.Reload()
    return events


def picture(event) -> Image.Image:
    return Image.open(io.BytesIO(event.encoded_image_string))


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    data = write_tiny_mnist(root / "data")
    result = run_cli(*cnn_overrides(data, root / "logs"), "callbacks.evaluation_images.feature_map_layer=features.2",
                     "callbacks.evaluation_images.feature_map_channels=3",
                     "callbacks.parameter_histograms.every_n_epochs=1",
                     "run_name=images")
    assert result.returncode == 0, result.stderr[-3000:]
    return read_events(root / "logs" / "mnist_cnn" / "images")


def test_confusion_matrices_each_validation_epoch_and_at_test(image_run):
    images = image_run.Tags()["images"]
    assert [e.step for e in image_run.Images("val/confusion_matrix")] == [STEPS_PER_EPOCH, 2 * STEPS_PER_EPOCH]
    assert [e.step for e in image_run.Images("test/confusion_matrix")] == [2 * STEPS_PER_EPOCH]
    assert "test/misclassified" in images
    for tag in ("val/confusion_matrix", "test/confusion_matrix", "test/misclassified"):
        event = image_run.Images(tag)[-1]
        shot = picture(event).convert("RGB")
        assert shot.size == (event.width, event.height) and min(shot.size) >= (300 if "confusion" in tag else 100)
        colours = shot.getcolors(maxcolors=shot.size[0] * shot.size[1])  # (count, colour) pairs
        assert len(colours) > 50  # a drawing (cells, text, colour bar), not a blank
        assert max(count for count, _ in colours) < 0.95 * shot.size[0] * shot.size[1]


def test_feature_maps_of_the_chosen_layer_each_validation_epoch(image_run):
    maps = image_run.Images("feature_maps/features.2")
    assert [e.step for e in maps] == [STEPS_PER_EPOCH, 2 * STEPS_PER_EPOCH]
    # 3 channels of 28x28, each drawn 2x larger, in a 2x2 grid with 1-pixel lines between
    assert (maps[-1].width, maps[-1].height) == (2 * 56 + 1, 2 * 56 + 1)
    assert len(picture(maps[-1]).convert("L").getcolors(maxcolors=1 << 16)) > 10
    assert [e.step for e in image_run.Images("feature_maps/input")] == [STEPS_PER_EPOCH]  # once


def test_weight_and_gradient_histograms_every_epoch(image_run):
    histograms = set(image_run.Tags()["histograms"])
    assert {"weights/net.features.0.weight", "weights/net.classifier.4.bias",
            "gradients/net.features.0.weight", "gradients/net.classifier.4.bias"} <= histograms
    # weights at the end of each epoch, gradients at each epoch's first optimizer step
    assert [e.step for e in image_run.Histograms("weights/net.features.0.weight")] == [6, 12]
    assert [e.step for e in image_run.Histograms("gradients/net.features.0.weight")] == [0, 6]
    weights = image_run.Histograms("weights/net.features.0.weight")[-1].histogram_value
    assert weights.num == 4 * 1 * 3 * 3 and weights.min < 0 < weights.max


def test_text_run_draws_attention_and_lists_misclassified_texts(tmp_path):
    data = write_tiny_text(tmp_path / "data", train=120, test=40)
    result = run_cli("data=sst2", "model=bilstm_attention", f"paths.data_dir={data}",
                     f"paths.log_dir={tmp_path / 'logs'}",
                     f"paths.cache_dir={tmp_path / 'cache'}", "data.val_size=20", "model.embedding_dim=16",
                     "model.hidden_size=16", "model.attention_width=8", "trainer.max_epochs=1",
                     "callbacks.evaluation_images.attention_layer=attention",
                     "callbacks.evaluation_images.attention_examples=2", "run_name=text")
    assert result.returncode == 0, result.stderr[-3000:]
    events = read_events(tmp_path / "logs" / "sst2_bilstm_attention" / "text")
    assert {"attention/attention", "val/confusion_matrix", "test/confusion_matrix"} <= set(events.Tags()["images"])
    attention = picture(events.Images("attention/attention")[-1]).convert("RGB")
    assert min(attention.size) >= 200 and len(attention.getcolors(maxcolors=attention.size[0] * attention.size[1])) > 50
    table = events.Tensors("test/misclassified/text_summary")[-1].tensor_proto.string_val[0].decode()
    lines = table.splitlines()
    assert lines[:2] == ["| text | true | predicted |", "|---|---|---|"] and 2 < len(lines) <= 2 + 16
    assert "topic" in lines[2] and lines[2].endswith(("| negative | positive |", "| positive | negative |"))


def test_every_image_and_histogram_switches_off(tmp_path):
    data = write_tiny_mnist(tmp_path / "data")
    result = run_cli(*quick_overrides(data, tmp_path / "logs"), "trainer.max_epochs=1", "run_name=off",
                     "callbacks.evaluation_images.confusion_matrix=false",
                     "callbacks.evaluation_images.misclassified_examples=0")
    assert result.returncode == 0, result.stderr[-3000:]
    events = read_events(tmp_path / "logs" / "mnist_mlp" / "off")
    assert events.Tags()["images"] == [] and events.Tags()["histograms"] == []
    assert events.Tags()["tensors"] == ["config/text_summary"]


def test_an_unknown_feature_map_layer_fails_before_training_listing_the_layers(tmp_path):
    data = write_tiny_mnist(tmp_path / "data")
    result = run_cli(*cnn_overrides(data, tmp_path / "logs"), "callbacks.evaluation_images.feature_map_layer=feature.9",
                     "run_name=typo")
    assert result.returncode == 2, result.stderr[-3000:]
    assert "callbacks.evaluation_images.feature_map_layer='feature.9'" in result.stderr
    assert "features.0, features.1, features.2" in result.stderr and "classifier.4" in result.stderr
    assert not (tmp_path / "logs" / "mnist_cnn" / "typo" / "checkpoints").exists()  # not one epoch trained


def test_a_module_without_class_scores_draws_the_rest_and_says_so(tmp_path):
    data = write_tiny_mnist(tmp_path / "data")
    result = run_cli("experiment=mnist_multitask", *quick_overrides(data, tmp_path / "logs"), "trainer.max_epochs=1",
                     "run_name=multitask", "callbacks.parameter_histograms.every_n_epochs=1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "MultiTaskModule gives no class scores, so no confusion matrix" in result.stdout + result.stderr
    events = read_events(tmp_path / "logs" / "mnist_multitask" / "multitask")
    assert events.Tags()["images"] == [] and "weights/loss.log_vars" in events.Tags()["histograms"]


def test_channel_grid_and_text_table_helpers():
    maps = torch.arange(5 * 32 * 32, dtype=torch.float32).reshape(5, 32, 32)
    grid = channel_grid(maps)  # 5 maps of 32x32, each drawn 2x larger, in a 3x2 grid with 1-pixel lines
    assert grid.shape == (1, 2 * 64 + 1, 3 * 64 + 2) and grid.min() == 0 and grid.max() == 1
    assert grid[0, 64].eq(1).all() and grid[0, 65:, 130:].eq(1).all()  # a line, and the empty sixth cell
    vocabulary = Vocabulary(["<pad>", "<unk>", "a|b", "fine"])
    table = misclassified_table([(torch.tensor([2, 1, 3]), 0, 1)], vocabulary, ["bad", "good"])
    assert table.splitlines()[-1] == "| a\\|b &lt;unk&gt; fine | bad | good |"


def test_confusion_image_colours_cells_by_the_share_of_their_true_class():
    picture = confusion_image(torch.tensor([[10, 0], [5, 5]]), ["cat", "dog"])  # rows: true class
    assert picture.dtype == torch.uint8 and picture.shape[0] == 3
    colours = {tuple(pixel) for pixel in picture.permute(1, 2, 0).reshape(-1, 3).tolist()}
    full, half, none = (8, 48, 107), (128, 150, 181), (247, 251, 255)  # shares 1, 0.5 and 0 of the true class
    assert {full, half, none} <= colours
    rows = picture.permute(1, 2, 0)
    # Along the first cell row: the dark "cat as cat" cell lies left of the pale "cat as dog" one.
    row = [tuple(p) for p in rows[15].tolist()]
    assert row.index(full) < row.index(none, row.index(full))


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_our_png_encoder_round_trips_through_pil(channels):
    image = torch.randint(0, 256, (channels, 37, 53), dtype=torch.uint8)
    image[:, :10] = 7  # flat rows too
    decoded = np.asarray(Image.open(io.BytesIO(png_bytes(image))))
    assert torch.equal(torch.from_numpy(decoded.reshape(37, 53, channels)).permute(2, 0, 1), image)
    wide = png_bytes(image.permute(0, 2, 1))  # a non-contiguous picture: the same pixels, transposed
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(wide))).reshape(53, 37, channels),
                          image.permute(2, 1, 0).numpy())
