"""What a classifier gets right and wrong, as pictures in TensorBoard (switches: conf/callbacks/default.yaml).

- val/confusion_matrix (each validation epoch) and test/confusion_matrix: true classes (rows) against predicted ones,
  coloured by the share of each true class, counts in the cells;
- test/misclassified: the first misclassified test images, titled "true / predicted" (text data: a table of texts);
- feature_maps/<layer>: a layer's output channels for a fixed validation image (the seed's forward-hook view);
- attention/<layer>: a text model's attention weights over the tokens of fixed validation texts.

Everything is drawn from what validation and test compute anyway: the class scores validation_step and test_step
return (`outputs`) and the batch. Training steps are untouched, and matplotlib is imported only to draw. Under DDP
every process counts its own batches into the confusion matrix (compute() sums them); process 0 draws and writes.
"""
import math

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.utilities import rank_zero_info
from torchmetrics.classification import MulticlassConfusionMatrix

from lightlab.errors import UserError
from lightlab.feature_maps import FeatureMaps
from lightning_modules.classification import ClassificationModule

KEY = "callbacks.evaluation_images"


def class_names(datamodule, count: int) -> list[str]:
    """The data's class names (images: `class_names`, text: `classes`), or the class numbers where it has none
    (CIFAR-100's are in a file not read)."""
    names = getattr(datamodule, "class_names", None) or getattr(datamodule, "classes", None)
    return [str(name) for name in names] if names and len(names) == count else [str(i) for i in range(count)]


class EvaluationImages(pl.Callback):
    def __init__(self, confusion_matrix: bool = True, misclassified_examples: int = 16,
                 feature_map_layer: str | None = None, feature_map_channels: int = 16,
                 attention_layer: str | None = None, attention_examples: int = 4):
        for option, value, least in (("misclassified_examples", misclassified_examples, 0),
                                     ("feature_map_channels", feature_map_channels, 1),
                                     ("attention_examples", attention_examples, 1)):
            if value < least:
                raise UserError(f"{KEY}.{option}={value}: it must be at least {least}.")
        self.confusion_matrix, self.misclassified_examples = confusion_matrix, misclassified_examples
        self.feature_map_layer, self.feature_map_channels = feature_map_layer, feature_map_channels
        self.attention_layer, self.attention_examples = attention_layer, attention_examples
        self.loggers: list[TensorBoardLogger] = []
        self.confusion: MulticlassConfusionMatrix | None = None
        self.vocabulary = None  # text data's (token ids -> tokens); image data has none
        self.class_names: list[str] | None = None
        self.probe = None  # (inputs, labels) of the first validation batch's first examples, kept for every epoch
        self.input_written = False
        self.misclassified: list[tuple[torch.Tensor, int, int]] = []  # (image or token ids, true, predicted)

    # --- before any batch: nothing to draw on, or a setting that cannot work, is known now --------------------
    def setup(self, trainer, module, stage: str) -> None:
        self.loggers = [logger for logger in trainer.loggers if isinstance(logger, TensorBoardLogger)]
        if not self.loggers:  # logger=csv or none: nowhere to draw, so nothing is drawn or checked
            return
        datamodule = trainer.datamodule
        self.vocabulary = getattr(datamodule, "vocabulary", None)  # text data has one; image data none
        # Metric learning and multi-task modules return no class scores from validation_step: for them the
        # confusion matrix and misclassified examples are left out (a note says so) and the rest is drawn. Not an
        # error: both are on by default, and callbacks=none would drop an experiment's node switching them off.
        if not isinstance(module, ClassificationModule):
            if self.confusion_matrix or self.misclassified_examples:  # (said once: switched off below)
                rank_zero_info(f"{KEY}: {type(module).__name__} gives no class scores, so no confusion matrix or "
                               f"misclassified examples are drawn.")
            self.confusion_matrix, self.misclassified_examples = False, 0
        else:
            self.class_names = class_names(datamodule, module.hparams.num_classes)
        for option, layer in (("feature_map_layer", self.feature_map_layer), ("attention_layer", self.attention_layer)):
            if layer is not None:
                try:  # an unknown name fails here, before the first epoch, listing the network's layers
                    FeatureMaps(module.net, [layer])
                except UserError as error:
                    raise UserError(f"{KEY}.{option}={layer!r}: {error}") from None
        if self.feature_map_layer is not None and self.vocabulary is not None:
            raise UserError(f"{KEY}.feature_map_layer draws image channels, but this data is text. Set it to null "
                            f"(a text model's attention: {KEY}.attention_layer).")
        if self.attention_layer is not None and self.vocabulary is None:
            raise UserError(f"{KEY}.attention_layer draws attention over a text's tokens, but this data gives "
                            f"images. Set it to null (an image model's layers: {KEY}.feature_map_layer).")
        if self.confusion_matrix:  # (validate_args=False: its checks read values back from the device)
            self.confusion = MulticlassConfusionMatrix(len(self.class_names), validate_args=False)

    def start_epoch(self, module) -> None:
        if self.confusion is not None:
            # Each epoch's matrix from zero; this also drops the sanity check's batches.
            self.confusion = self.confusion.to(module.device)
            self.confusion.reset()

    # --- per validation / test batch: only the confusion matrix's update, and the first examples kept ---------
    def on_validation_epoch_start(self, trainer, module) -> None:
        self.start_epoch(module)

    def on_validation_batch_end(self, trainer, module, outputs, batch, batch_index, dataloader_index=0) -> None:
        if not self.loggers:
            return
        if self.confusion is not None:
            self.confusion.update(outputs, batch[-1])  # scores: the metric takes their argmax
        if self.probe is None and (self.feature_map_layer or self.attention_layer):
            self.probe = self.capture(trainer, module, batch)

    def on_test_epoch_start(self, trainer, module) -> None:
        self.start_epoch(module)
        self.misclassified = []

    def on_test_batch_end(self, trainer, module, outputs, batch, batch_index, dataloader_index=0) -> None:
        if not self.loggers:
            return
        if self.confusion is not None:
            self.confusion.update(outputs, batch[-1])
        if len(self.misclassified) < self.misclassified_examples:
            self.collect_misclassified(outputs, batch)

    def capture(self, trainer, module, batch) -> tuple:
        """The first example(s) of the first validation batch: the fixed input drawn every epoch. Drawn once
        now, so a layer whose output is not a picture fails before training does, not after an epoch."""
        *inputs, labels = batch
        count = 1 if self.feature_map_layer else self.attention_examples
        probe = tuple(x[:count].clone() for x in inputs), labels[:count].clone()
        if self.feature_map_layer:
            self.feature_maps(trainer, module, probe[0])
        else:
            self.attention(trainer, module, probe[0])
        return probe

    def collect_misclassified(self, outputs, batch) -> None:
        *inputs, labels = batch
        predicted = outputs.argmax(dim=1)
        room = self.misclassified_examples - len(self.misclassified)
        for index in (predicted != labels).nonzero().flatten()[:room].tolist():  # one read-back per test batch
            # Text: the token ids without their padding; images: as normalised (drawing rescales them).
            example = inputs[0][index, :inputs[1][index]] if self.vocabulary is not None else inputs[0][index]
            self.misclassified.append((example.cpu(), int(labels[index]), int(predicted[index])))

    # --- at the end of each validation epoch and of the test: draw -------------------------------------------
    def on_validation_epoch_end(self, trainer, module) -> None:
        if not self.loggers or trainer.sanity_checking:
            return
        matrix = self.confusion.compute() if self.confusion is not None and self.confusion.update_called else None
        if not trainer.is_global_zero:  # compute() above ran on every process: it syncs them
            return
        step = trainer.global_step
        if matrix is not None:
            self.write_figure("val/confusion_matrix", confusion_figure(matrix.cpu(), self.class_names), step)
        if self.probe is not None and self.feature_map_layer:
            self.write_feature_maps(trainer, module, step)
        if self.probe is not None and self.attention_layer:
            self.write_attention(trainer, module, step)

    def on_test_epoch_end(self, trainer, module) -> None:
        if not self.loggers:
            return
        matrix = self.confusion.compute() if self.confusion is not None and self.confusion.update_called else None
        if not trainer.is_global_zero:
            return
        step = trainer.global_step
        if matrix is not None:
            self.write_figure("test/confusion_matrix", confusion_figure(matrix.cpu(), self.class_names), step)
        if self.misclassified_examples and not self.misclassified:
            self.write_text("test/misclassified", "No test example was misclassified.", step)
        elif self.misclassified and self.vocabulary is not None:
            table = misclassified_table(self.misclassified, self.vocabulary, self.class_names)
            self.write_text("test/misclassified", table, step)
        elif self.misclassified:
            images = [image for image, _, _ in self.misclassified]
            names = self.class_names
            titles = [f"{names[true]} / {names[predicted]}" for _, true, predicted in self.misclassified]
            self.write_figure("test/misclassified", misclassified_figure(images, titles), step)

    def layer_output(self, trainer, module, layer: str, inputs: tuple):
        """`layer`'s output and the network's class scores for `inputs`, with the weights as they are now."""
        precision = trainer.precision_plugin  # the dtype and autocast that validation_step ran with
        with torch.no_grad(), FeatureMaps(module.net, [layer]) as recorded, precision.forward_context():
            scores = module.net(*precision.convert_input(inputs))
        return recorded[layer], scores

    def feature_maps(self, trainer, module, inputs: tuple) -> torch.Tensor:
        output, _ = self.layer_output(trainer, module, self.feature_map_layer, inputs)
        maps = output if isinstance(output, torch.Tensor) else output[0]
        if maps.dim() != 4:
            raise UserError(f"{KEY}.feature_map_layer={self.feature_map_layer!r} outputs shape {list(maps.shape)}, "
                            f"not (batch, channels, height, width) maps. Choose a convolutional layer.")
        return maps

    def attention(self, trainer, module, inputs: tuple) -> tuple[torch.Tensor, torch.Tensor]:
        output, scores = self.layer_output(trainer, module, self.attention_layer, inputs)
        weights = output if isinstance(output, torch.Tensor) else output[-1]  # AdditiveAttention: (context, weights)
        if weights.dim() != 2 or len(weights) != len(inputs[0]) or weights.shape[1] > inputs[0].shape[1]:
            raise UserError(f"{KEY}.attention_layer={self.attention_layer!r} outputs shape {list(weights.shape)}, "
                            f"not (texts, tokens) weights. Choose the model's attention layer (model="
                            f"bilstm_attention: attention).")
        return weights, scores

    def write_feature_maps(self, trainer, module, step: int) -> None:
        (image,), _ = self.probe
        maps = self.feature_maps(trainer, module, (image,))
        self.write_image(f"feature_maps/{self.feature_map_layer}", channel_grid(maps[0, :self.feature_map_channels]),
                         step)
        if not self.input_written:  # the input never changes: once is enough
            self.write_image("feature_maps/input", enlarge(display_image(image[0])), step)
            self.input_written = True

    def write_attention(self, trainer, module, step: int) -> None:
        (ids, lengths), labels = self.probe
        weights, scores = self.attention(trainer, module, (ids, lengths))
        tokens = [[self.vocabulary.tokens[i] for i in row[:length].tolist()] for row, length in zip(ids, lengths)]
        names = self.class_names or [str(index) for index in range(scores.shape[1])]
        titles = [f"true: {names[true]}, predicted: {names[predicted]}"
                  for true, predicted in zip(labels.tolist(), scores.argmax(dim=1).tolist())]
        weights = [row[:len(words)].float().cpu() for row, words in zip(weights, tokens)]
        self.write_figure(f"attention/{self.attention_layer}", attention_figure(tokens, weights, titles), step)

    def write_figure(self, tag: str, figure, step: int) -> None:
        for logger in self.loggers:
            logger.experiment.add_figure(tag, figure, global_step=step)

    def write_image(self, tag: str, image: torch.Tensor, step: int) -> None:
        for logger in self.loggers:
            logger.experiment.add_image(tag, image.float().cpu(), global_step=step, dataformats="CHW")

    def write_text(self, tag: str, text: str, step: int) -> None:
        for logger in self.loggers:
            logger.experiment.add_text(tag, text, global_step=step)


# --- pictures from tensors ------------------------------------------------------------------------------------
def scaled(values: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """Min-max scaled to [0, 1] over `dims`: normalised images and activations have no fixed range."""
    low, high = values.amin(dims, keepdim=True), values.amax(dims, keepdim=True)
    return (values - low) / (high - low).clamp_min(1e-12)


def display_image(image: torch.Tensor) -> torch.Tensor:
    """A normalised (C, H, W) image as greyscale (1, H, W) or RGB (3, H, W) in [0, 1]."""
    image = image.float() if image.shape[0] in (1, 3) else image[:1].float()
    return scaled(image, (0, 1, 2))


def enlarge(images: torch.Tensor, min_side: int = 64) -> torch.Tensor:
    """Nearest-neighbour upscaled by a whole factor: a 7x7 map is otherwise a speck on the page."""
    factor = max(1, min_side // max(images.shape[-2:]))
    return images.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)


def channel_grid(maps: torch.Tensor) -> torch.Tensor:
    """(C, H, W) activations as one (1, H', W') greyscale image: each channel scaled on its own, tiled in a
    near-square grid with white 1-pixel lines between them."""
    maps = enlarge(scaled(maps.float(), (1, 2)))
    count, height, width = maps.shape
    columns = math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    grid = maps.new_ones(rows * (height + 1) - 1, columns * (width + 1) - 1)
    for index, channel in enumerate(maps):
        top, left = (index // columns) * (height + 1), (index % columns) * (width + 1)
        grid[top:top + height, left:left + width] = channel
    return grid[None]


def confusion_figure(matrix: torch.Tensor, names: list[str]):
    """Colour: the share of each true class (row) predicted as each class, so rare classes read as well as
    common ones; the counts are written in the cells up to 20 classes, the names shown up to 30."""
    from matplotlib.figure import Figure

    counts = matrix.long()
    rates = (counts / counts.sum(dim=1, keepdim=True).clamp_min(1)).numpy()
    classes = len(names)
    side = min(3 + 0.5 * classes, 14)
    figure = Figure(figsize=(side + 1, side), dpi=80, layout="constrained")
    axes = figure.add_subplot()
    shown = axes.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(shown, ax=axes, shrink=0.8, label="share of the true class")
    axes.set(xlabel="predicted class", ylabel="true class")
    if classes <= 30:
        axes.set_xticks(range(classes), names, rotation=45, ha="right")
        axes.set_yticks(range(classes), names)
    if classes <= 20:
        for true in range(classes):
            for predicted in range(classes):
                axes.text(predicted, true, str(int(counts[true, predicted])), ha="center", va="center", fontsize=9,
                          color="white" if rates[true, predicted] > 0.5 else "black")
    return figure


def misclassified_figure(images: list[torch.Tensor], titles: list[str]):
    from matplotlib.figure import Figure

    columns = math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / columns)
    figure = Figure(figsize=(1.8 * columns, 1.9 * rows + 0.4), dpi=80, layout="constrained")
    figure.suptitle("true / predicted")
    for index, (image, title) in enumerate(zip(images, titles)):
        axes = figure.add_subplot(rows, columns, index + 1)
        picture = display_image(image)
        if len(picture) == 1:
            axes.imshow(picture[0].numpy(), cmap="gray", vmin=0, vmax=1)
        else:
            axes.imshow(picture.permute(1, 2, 0).numpy())
        axes.set_title(title, fontsize=9)
        axes.axis("off")
    return figure


def attention_figure(tokens: list[list[str]], weights: list[torch.Tensor], titles: list[str]):
    """One row per text: its tokens along the x axis, each cell coloured by the token's attention weight (one
    scale for all rows, from 0: attention spread evenly reads as an even colour, a focused one as a bright cell)."""
    from matplotlib.figure import Figure

    longest = max(len(words) for words in tokens)
    highest = max(float(weight.max()) for weight in weights)
    figure = Figure(figsize=(min(2 + 0.32 * longest, 24), 1.6 * len(tokens)), dpi=80, layout="constrained")
    rows = figure.subplots(len(tokens), 1, squeeze=False)[:, 0]
    for axes, words, weight, title in zip(rows, tokens, weights, titles):
        shown = axes.imshow(weight[None].numpy(), cmap="viridis", aspect="auto", vmin=0, vmax=highest)
        axes.set_xticks(range(len(words)), words, rotation=60, ha="right", fontsize=8)
        axes.set_xlim(-0.5, longest - 0.5)  # the same cell width in every row
        axes.set_yticks([])
        axes.set_title(title, fontsize=9, loc="left")
    figure.colorbar(shown, ax=rows, pad=0.01, label="attention weight")
    return figure


def misclassified_table(examples: list[tuple[torch.Tensor, int, int]], vocabulary, names: list[str]) -> str:
    """A markdown table (TensorBoard's TEXT tab renders it) of the texts, decoded from their token ids."""
    lines = ["| text | true | predicted |", "|---|---|---|"]
    for ids, true, predicted in examples:
        text = " ".join(vocabulary.tokens[i] for i in ids.tolist())
        # "|" would end the cell; "<unk>" would be taken for an HTML tag and dropped.
        text = text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")
        lines.append(f"| {text} | {names[true]} | {names[predicted]} |")
    return "\n".join(lines)
