"""What a classifier gets right and wrong, as pictures in TensorBoard (switches: conf/callbacks/default.yaml).

- val/confusion_matrix (each validation epoch) and test/confusion_matrix: true classes (rows) against predicted ones,
  coloured by the share of each true class, counts in the cells;
- test/misclassified: the first misclassified test images, titled "true / predicted" (text data: a table of texts);
- feature_maps/<layer>: a layer's output channels for a fixed validation image (the seed's forward-hook view);
- attention/<layer>: a text model's attention weights over the tokens of fixed validation texts.

Everything is drawn from what validation and test compute anyway: the class scores validation_step and test_step
return (`outputs`) and the batch. Training steps are untouched; the confusion matrix and image grid are drawn with
PIL in milliseconds (matplotlib, imported only for the attention plot, takes ~0.2 s a figure). Under DDP
every process counts its own batches into the confusion matrix (compute() sums them); process 0 draws and writes.
"""

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.utilities import rank_zero_info
from torchmetrics.classification import MulticlassConfusionMatrix

from lightlab.base.errors import UserError
from lightlab.base.loggers import tensorboard_loggers
from lightlab.base.ranks import is_rank_zero
from lightlab.callbacks.feature_maps import FeatureMaps
from lightlab.callbacks.pictures import (
    attention_figure,
    channel_grid,
    confusion_image,
    display_image,
    enlarge,
    misclassified_image,
    misclassified_table,
    png_summary,
)
from lightlab.lightning_internals.trainer_state import event_file_writer
from lightning_modules.tasks.classification import ClassificationModule

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
        self.loggers = tensorboard_loggers(trainer)
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
        if getattr(datamodule, "preprocessing", None) is not None and self.misclassified_examples:  # a table
            rank_zero_info(f"{KEY}: table rows are not pictures; no misclassified examples are drawn (mode=predict "
                           f"writes every row's prediction).")
            self.misclassified_examples = 0
        for option, layer in (("feature_map_layer", self.feature_map_layer), ("attention_layer", self.attention_layer)):
            if layer is not None:
                try:  # an unknown name fails here, before the first epoch, listing the network's layers
                    FeatureMaps(module.net, [layer])
                except UserError as error:
                    raise UserError(f"{KEY}.{option}={layer!r}: {error} Set {KEY}.{option} to one of them, or "
                                    f"null to draw none (an experiment's layer may not exist in another "
                                    f"model=).") from None
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
        if not is_rank_zero(trainer):  # compute() above ran on every process: it syncs them
            return
        step = trainer.global_step
        if matrix is not None:
            self.write_image("val/confusion_matrix", confusion_image(matrix.cpu(), self.class_names), step)
        if self.probe is not None and self.feature_map_layer:
            self.write_feature_maps(trainer, module, step)
        if self.probe is not None and self.attention_layer:
            self.write_attention(trainer, module, step)

    def on_test_epoch_end(self, trainer, module) -> None:
        if not self.loggers:
            return
        matrix = self.confusion.compute() if self.confusion is not None and self.confusion.update_called else None
        if not is_rank_zero(trainer):
            return
        step = trainer.global_step
        if matrix is not None:
            self.write_image("test/confusion_matrix", confusion_image(matrix.cpu(), self.class_names), step)
        if self.misclassified_examples and not self.misclassified:
            self.write_text("test/misclassified", "No test example was misclassified.", step)
        elif self.misclassified and self.vocabulary is not None:
            table = misclassified_table(self.misclassified, self.vocabulary, self.class_names)
            self.write_text("test/misclassified", table, step)
        elif self.misclassified:
            images = [image for image, _, _ in self.misclassified]
            names = self.class_names
            titles = [f"{names[true]} / {names[predicted]}" for _, true, predicted in self.misclassified]
            self.write_image("test/misclassified", misclassified_image(images, titles), step)

    def layer_output(self, trainer, module, layer: str, inputs: tuple):
        """`layer`'s output and the network's class scores for `inputs`, with the weights as they are now."""
        precision = trainer.precision_plugin  # the dtype and autocast that validation_step ran with
        # force_eager: a compiled network (compile=true) would run its graph, compiled without these hooks,
        # or recompile with them inside for every later step; this one call runs the Python modules instead.
        with torch.no_grad(), FeatureMaps(module.net, [layer]) as recorded, precision.forward_context(), \
                torch.compiler.set_stance("force_eager"):
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
            if image.dtype == torch.uint8:  # our drawn pictures: encoded once, fast (pictures.png_summary)
                event_file_writer(logger).add_summary(png_summary(tag, image.cpu()), step)
            else:  # float ones are in [0, 1] (TensorBoard scales floats by 255)
                logger.experiment.add_image(tag, image.float().cpu(), global_step=step, dataformats="CHW")

    def write_text(self, tag: str, text: str, step: int) -> None:
        for logger in self.loggers:
            logger.experiment.add_text(tag, text, global_step=step)


# --- pictures from tensors ------------------------------------------------------------------------------------
