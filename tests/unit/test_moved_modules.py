"""Every class or function that conf/ named by `_target_` before the layout changed (commit 97dcedf) still resolves,
so saved configs and checkpoints of that time keep working (lightlab/base/moved.py)."""
import importlib

import pytest
from hydra.utils import get_object

from lightlab.base.objects import locate

BEFORE_THE_MOVE = [
    "datamodules.cifar.CIFAR100DataModule",
    "datamodules.cifar.CIFAR10DataModule",
    "datamodules.mnist.FashionMNISTDataModule",
    "datamodules.mnist.MNISTDataModule",
    "datamodules.text.TextClassificationDataModule",
    "lightlab.atomic_checkpoints.AtomicCheckpointIO",
    "lightlab.device_slots.OneGPUPerJob",
    "lightlab.distributed.JobDDPStrategy",
    "lightlab.epoch_speed.EpochSpeed",
    "lightlab.evaluation_images.EvaluationImages",
    "lightlab.fast_loop.NoProfiler",
    "lightlab.fast_loop.StepRichProgressBar",
    "lightlab.finetuning.FreezeThenUnfreeze",
    "lightlab.learning_rate_finder.LearningRateFinder",
    "lightlab.non_finite.StopOnNonFiniteLoss",
    "lightlab.optuna_pruning.PruneUnpromisingTrials",
    "lightlab.parameter_histograms.ParameterHistograms",
    "lightlab.preemption.CheckpointOnSignal",
    "lightlab.random_state.RestoreRandomState",
    "lightlab.run_directory.ResolveSweepDirectory",
    "lightlab.sweep_summary.SweepSummary",
    "lightlab.weight_averaging.EMAWeights",
    "lightning_modules.classification.ClassificationModule",
    "lightning_modules.cnn.BasicCNN",
    "lightning_modules.fast_cifar_net.FastCIFARNet",
    "lightning_modules.losses.BCEWithLogitsLoss",
    "lightning_modules.losses.CrossEntropyLoss",
    "lightning_modules.losses.FocalLoss",
    "lightning_modules.losses.L1Loss",
    "lightning_modules.losses.MSELoss",
    "lightning_modules.losses.NLLLoss",
    "lightning_modules.losses.SmoothL1Loss",
    "lightning_modules.metric_learning.MetricLearningModule",
    "lightning_modules.mlp.MLP",
    "lightning_modules.multitask.MultiTaskLoss",
    "lightning_modules.multitask.MultiTaskModule",
    "lightning_modules.optimization.SparseAdamWithDense",
    "lightning_modules.optimization.parameter_groups",
    "lightning_modules.recurrent.RecurrentClassifier",
    "lightning_modules.resnet.ResNet",
    "lightning_modules.schedules.lambda_schedule",
    "lightning_modules.schedules.warmup_inverse_square_root",
]


@pytest.mark.parametrize("dotted_path", BEFORE_THE_MOVE)
def test_an_old_target_resolves_to_the_class_at_its_new_place(dotted_path):
    ours, hydras = locate(dotted_path), get_object(dotted_path)  # our config checks, and Hydra's instantiate
    assert ours is hydras and ours.__name__ == dotted_path.rpartition(".")[2]


def test_an_old_module_path_names_what_it_lacks():
    with pytest.raises(AttributeError, match="moved to lightlab.lightning_internals.hook_dispatch, "
                                             "lightlab.callbacks.progress_bar"):
        getattr(importlib.import_module("lightlab.fast_loop"), "NoSuchThing")  # noqa: B009 (the lookup is the test)
