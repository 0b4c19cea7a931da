"""Predictions from a saved checkpoint, in a fresh process, with nothing but the checkpoint file.

Everything needed is inside it: the network's config (hyper-parameters), its weights, and for text the
vocabulary and tokenizer settings the network was trained with (the DataModule's state).
"""
from pathlib import Path

import torch

from datamodules.text import TextClassificationDataModule
from lightlab.base.errors import UserError
from lightning_modules.tasks.classification import ClassificationModule


def predict_texts(checkpoint_path: str | Path, texts: list[str]) -> list[str]:
    """The predicted class name of each raw text."""
    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    state = checkpoint.get(TextClassificationDataModule.__qualname__)
    if state is None:
        raise UserError(f"{checkpoint_path} was not trained on text data (it holds no vocabulary).")
    datamodule = TextClassificationDataModule(**checkpoint["datamodule_hyper_parameters"])
    datamodule.load_state_dict(state)
    module = ClassificationModule.load_from_checkpoint(checkpoint_path, map_location="cpu").eval()
    ids, lengths = datamodule.encode(texts)
    with torch.no_grad():
        predictions = module.scores(ids, lengths).argmax(dim=1)
    return [datamodule.classes[i] for i in predictions.tolist()]
