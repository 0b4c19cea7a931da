"""Optimizers from config: parameter groups, LBFGS under automatic optimisation, SparseAdam with sparse
embeddings, fine-tuning (init_from, freeze, unfreeze), and the learning-rate finder."""
import collections
import json

import pytest
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from datamodules.tensor_batches import TensorBatches
from lightlab.base.errors import UserError
from lightlab.callbacks.finetuning import load_network_weights
from lightlab.run.compose import compose_config
from lightning_modules.tasks.classification import ClassificationModule
from run import build, train
from tests.conftest import quick_overrides


def compose(tmp_path, data, *overrides):
    return compose_config([*quick_overrides(data, tmp_path / "logs"), *overrides], output_dir=str(tmp_path / "run"))


def scalars(run_dir, tag) -> list[float]:
    events = EventAccumulator(str(run_dir))
    events.Reload()
    return [event.value for event in events.Scalars(tag)]


def optimizer_of(cfg):
    """The optimizer a run's module builds, without training."""
    datamodule, module, trainer = build(cfg)
    module.trainer = trainer  # configure_optimizers checks the optimizer against the trainer's settings
    return module, module.configure_optimizers()


def test_parameter_groups_reach_the_optimizer_exactly_as_configured(tmp_path, tiny_data):
    cfg = compose(tmp_path, tiny_data, "optimizer=adamw", "optimizer.lr=0.002", "optimizer.weight_decay=0.05",
                  "model=mlp_bn", "model.hidden_dims=[16,16]",
                  "+parameter_groups.lr_multipliers={net.classifier: 10, net.features.1: 0.5}", "scheduler=none")
    module, optimizer = optimizer_of(cfg)
    assert isinstance(optimizer, torch.optim.AdamW)
    got = {id(p): (group["lr"], group["weight_decay"]) for group in optimizer.param_groups for p in group["params"]}
    for name, parameter in module.named_parameters():
        lr = 0.002 * (10 if name.startswith("net.classifier.") else 0.5 if name.startswith("net.features.1.") else 1)
        is_bias_or_norm = name.endswith(".bias") or ".layers.1." in name  # layers.1: the BatchNorm
        assert got[id(parameter)] == (pytest.approx(lr), 0.0 if is_bias_or_norm else 0.05), name
    assert len(got) == sum(1 for _ in module.parameters())  # every parameter, once

    cfg.parameter_groups.weight_decay_on_bias_and_norm = True
    _, optimizer = optimizer_of(cfg)
    assert {group["weight_decay"] for group in optimizer.param_groups} == {0.05}


def test_an_unknown_submodule_name_lists_the_real_ones(tmp_path, tiny_data):
    cfg = compose(tmp_path, tiny_data, "+parameter_groups.lr_multipliers={net.head: 10}")
    with pytest.raises(UserError, match=r"names \['net.head'\], which the module does not have. "
                                        r"Its parts with parameters are: net, net.features, net.classifier"):
        optimizer_of(cfg)


def test_lbfgs_trains_under_automatic_optimisation(tmp_path, tiny_data):
    cfg = compose(tmp_path, tiny_data, "optimizer=lbfgs", "trainer.max_epochs=2", "scheduler=none")
    datamodule, module, trainer = build(cfg)
    calls = []
    original = module.training_step

    def counted_training_step(batch, batch_idx):
        loss = original(batch, batch_idx)
        calls.append((trainer.current_epoch, batch_idx, float(loss)))
        return loss

    module.training_step = counted_training_step
    trainer.fit(module, datamodule=datamodule)
    losses = scalars(tmp_path / "run", "train/loss")
    evaluations = collections.Counter((epoch, batch_index) for epoch, batch_index, _ in calls)
    assert len(evaluations) == trainer.global_step and evaluations[(0, 0)] > 2  # (a converged step may stop sooner)
    assert losses[1] < 0.5 * losses[0]  # (real MNIST: test_lbfgs_learns_real_mnist)
    assert float(trainer.callback_metrics["val/acc"]) > 0.9
    # The epoch's train/loss counts each batch once, at its first evaluation, not once per closure call.
    first_evaluations = {}
    for epoch, batch_index, loss in calls:
        first_evaluations.setdefault((epoch, batch_index), loss)
    epoch_zero = [loss for (epoch, _), loss in first_evaluations.items() if epoch == 0]
    assert losses[0] == pytest.approx(sum(epoch_zero) / len(epoch_zero), rel=1e-5)


class TokenBag(nn.Module):
    """A small embedding model: mean of sparse token embeddings, then a linear classifier."""

    def __init__(self, input_shape: list[int], num_classes: int, vocabulary: int = 50, width: int = 8):
        super().__init__()
        self.embedding = nn.EmbeddingBag(vocabulary, width, mode="mean", sparse=True)
        self.classifier = nn.Linear(width, num_classes)

    def forward(self, tokens):
        return self.classifier(self.embedding(tokens))


def token_data(count: int = 256):
    """Label c is carried by tokens 10c..10c+4; noise tokens are 40-44; the other tokens never occur."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 4, (count,), generator=generator)
    tokens = torch.randint(40, 45, (count, 6), generator=generator)
    tokens[:, :3] = 10 * labels[:, None] + torch.randint(0, 5, (count, 3), generator=generator)
    return tokens, labels


def test_sparse_adam_updates_sparse_embeddings_and_a_dense_optimizer_the_rest(tmp_path):
    cfg = compose_config(["optimizer=sparse_adam", "optimizer.lr=0.05", "scheduler=cosine"])
    plain = OmegaConf.to_container(cfg, resolve=True)
    module = ClassificationModule(net={"_target_": "tests.unit.test_optimizers.TokenBag"}, optimizer=plain["optimizer"],
                                  loss={"_target_": "torch.nn.CrossEntropyLoss"}, input_shape=[6], num_classes=4,
                                  scheduler=plain["scheduler"], parameter_groups=plain["parameter_groups"])
    embedding_before = module.net.embedding.weight.detach().clone()
    classifier_before = module.net.classifier.weight.detach().clone()
    tokens, labels = token_data()
    trainer = pl.Trainer(max_epochs=3, logger=False, enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=tmp_path, num_sanity_val_steps=0)
    trainer.fit(module, TensorBatches((tokens, labels), 32, shuffle=True), TensorBatches((tokens, labels), 64, False))

    optimizer = trainer.optimizers[0]
    assert isinstance(optimizer.sparse, torch.optim.SparseAdam) and isinstance(optimizer.dense, torch.optim.Adam)
    assert [p for g in optimizer.sparse.param_groups for p in g["params"]] == [module.net.embedding.weight]
    changed = (module.net.embedding.weight.detach() != embedding_before).any(dim=1)
    occurred = torch.zeros(50, dtype=torch.bool)
    occurred[tokens.unique()] = True
    assert torch.equal(changed, occurred) and not occurred.all()  # only rows that occurred in a batch moved
    assert not torch.equal(module.net.classifier.weight.detach(), classifier_before)
    assert float(trainer.callback_metrics["val/acc"]) > 0.9
    # The cosine schedule drove both inner optimizers through the shared param groups.
    assert optimizer.sparse.param_groups[0]["lr"] == optimizer.dense.param_groups[0]["lr"] < 0.05
    # Both inner states go into the checkpoint as plain data and come back.
    trainer.save_checkpoint(tmp_path / "sparse.ckpt")
    state = torch.load(tmp_path / "sparse.ckpt", weights_only=True)["optimizer_states"][0]
    assert len(state["optimizers"]) == 2 and state["optimizers"][0]["state"][0]["step"] > 0
    fresh = ClassificationModule.load_from_checkpoint(tmp_path / "sparse.ckpt")
    fresh.trainer = trainer
    restored = fresh.configure_optimizers()[0][0]
    restored.load_state_dict(state)
    assert restored.sparse.state_dict()["state"][0]["step"] == state["optimizers"][0]["state"][0]["step"]
    assert [g["lr"] for g in restored.param_groups] == [g["lr"] for g in optimizer.param_groups]
    assert restored.param_groups[0] is restored.sparse.param_groups[0]  # still shared with the inner optimizer

    clipped = pl.Trainer(max_epochs=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=tmp_path, gradient_clip_val=1.0)
    with pytest.raises(UserError, match="optimizer=sparse_adam cannot clip gradients"):
        clipped.fit(fresh, TensorBatches((tokens, labels), 32, shuffle=True))


def test_sparse_adam_without_sparse_parameters_says_what_to_do(tmp_path, tiny_data):
    cfg = compose(tmp_path, tiny_data, "optimizer=sparse_adam")
    with pytest.raises(UserError, match=r"optimizer=sparse_adam .* this model has none. Choose a model with sparse"):
        optimizer_of(cfg)


def test_finetuning_starts_from_weights_freezes_then_unfreezes_with_its_own_lr(tmp_path, tiny_data):
    pretrain = compose(tmp_path / "pretrain", tiny_data, "trainer.max_epochs=1")
    train(pretrain)
    source = tmp_path / "pretrain" / "run" / "checkpoints" / "last.ckpt"
    pretrained = torch.load(source, weights_only=True)["state_dict"]

    cfg = compose(tmp_path / "finetune", tiny_data, f"init_from={source}", "callbacks=finetune",
                  "callbacks.finetune.modules=[net.features]", "callbacks.finetune.unfreeze_at_epoch=1",
                  "callbacks.finetune.unfreeze_lr=0.0003", "trainer.max_epochs=2", "scheduler=none")
    datamodule, module, trainer = build(cfg)
    load_network_weights(module, cfg.init_from)
    assert all(torch.equal(module.state_dict()[k], v) for k, v in pretrained.items() if k.startswith("net."))
    snapshots = []
    trainer.callbacks.append(pl.callbacks.LambdaCallback(on_train_epoch_end=lambda trainer, module: snapshots.append(
        {k: v.clone() for k, v in module.net.state_dict().items()})))
    trainer.fit(module, datamodule=datamodule)

    feature_weight, classifier_weight = "features.0.layers.0.weight", "classifier.weight"
    assert torch.equal(snapshots[0][feature_weight], pretrained["net." + feature_weight])  # frozen in epoch 0
    assert not torch.equal(snapshots[0][classifier_weight], pretrained["net." + classifier_weight])
    assert not torch.equal(snapshots[1][feature_weight], snapshots[0][feature_weight])  # trained in epoch 1
    groups = trainer.optimizers[0].param_groups
    assert [group["lr"] for group in groups] == [1e-3, 0.0003]
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in module.net.features.parameters()}
    # Only the weights came from the pretrained run: the optimizer started from scratch (1 epoch = 6 steps).
    assert trainer.optimizers[0].state[module.net.classifier.weight]["step"] == trainer.global_step == 12


def test_unfrozen_groups_follow_the_schedule_the_decay_rules_and_a_resume(tmp_path, tiny_data):
    finetune = ["callbacks=finetune", "callbacks.finetune.modules=[net.features]",
                "callbacks.finetune.unfreeze_at_epoch=1",
                "callbacks.finetune.unfreeze_lr=0.0004", "optimizer=adamw", "scheduler=step", "trainer.max_epochs=3"]
    cfg = compose(tmp_path / "first", tiny_data, *finetune, "trainer.max_epochs=2")
    datamodule, module, trainer = build(cfg)
    trainer.fit(module, datamodule=datamodule)
    groups = trainer.optimizers[0].param_groups
    # The unfrozen features: a decayed group for weights, an undecayed one for biases, both at 0.0004 times
    # the factor the schedule has applied to the original groups (StepLR: 0.5 after 2 epochs).
    assert [(g["weight_decay"], len(g["params"])) for g in groups[2:]] == [(0.01, 1), (0.0, 1)]
    assert [g["lr"] for g in groups] == pytest.approx([0.0005, 0.0005, 0.0002, 0.0002])

    # Resumed after the unfreeze epoch: the features are trainable again, in the groups the checkpoint had.
    last = tmp_path / "first" / "run" / "checkpoints" / "last.ckpt"
    resumed_cfg = compose(tmp_path / "resumed", tiny_data, *finetune, f"ckpt_path={last}")
    datamodule, module, trainer = build(resumed_cfg)
    before = torch.load(last, weights_only=True)["state_dict"]["net.features.0.layers.0.weight"]
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(last))
    assert trainer.current_epoch == 3 and len(trainer.optimizers[0].param_groups) == 4
    assert module.net.features[0].layers[0].weight.requires_grad
    assert not torch.equal(module.net.features[0].layers[0].weight.detach(), before)


@pytest.mark.parametrize("source,message", [
    ("missing.ckpt", r"init_from=.*missing.ckpt: no such file"),
    ("other_network", r"init_from=.* is a different network \(other shape: classifier.bias, classifier.weight\)"),
    ("garbage", r"init_from=.* does not load as plain tensors"),
])
def test_init_from_refuses_what_does_not_fit(source, message, tmp_path, tiny_data):
    cfg = compose(tmp_path, tiny_data)
    _, module, _ = build(cfg)
    path = tmp_path / source
    if source == "other_network":
        torch.save({"features.0.layers.0.weight": torch.zeros(32, 784), "features.0.layers.0.bias": torch.zeros(32),
                    "classifier.weight": torch.zeros(5, 32), "classifier.bias": torch.zeros(5)}, path)
    elif source == "garbage":
        path.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match=message):
        load_network_weights(module, str(path))


@pytest.mark.parametrize("apply", [True, False])
def test_learning_rate_finder_logs_its_curve_and_applies_or_reports(apply, tmp_path, tiny_data):
    cfg = compose(tmp_path, tiny_data, "lr_finder.enabled=true", "lr_finder.num_steps=20", "lr_finder.max_lr=0.05",
                  "lr_finder.early_stop_threshold=null", f"lr_finder.apply={apply}", "trainer.max_epochs=4",
                  "optimizer.lr=0.123")
    train(cfg)
    run_dir = tmp_path / "run"
    found = json.loads((run_dir / "lr_finder.json").read_text())
    assert len(found["lr"]) == len(found["loss"]) == 20 and found["configured_lr"] == 0.123
    assert 1e-6 <= found["suggestion"] <= 1.0 and found["applied"] is apply
    used = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["hyper_parameters"]["optimizer"]["lr"]
    assert used == (found["suggestion"] if apply else 0.123)
    assert (run_dir / "lr_finder.png").stat().st_size > 1000
    events = EventAccumulator(str(run_dir), size_guidance={"images": 0})
    events.Reload()
    assert "lr_finder" in events.Tags()["images"]


OPTIMIZER_CLASSES = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW,
                     "adamax": torch.optim.Adamax, "rmsprop": torch.optim.RMSprop, "adagrad": torch.optim.Adagrad,
                     "adadelta": torch.optim.Adadelta, "asgd": torch.optim.ASGD, "rprop": torch.optim.Rprop,
                     "lbfgs": torch.optim.LBFGS}


def test_every_optimizer_option_builds_its_torch_class_with_the_configured_arguments(tmp_path, tiny_data):
    from lightlab.run.compose import CONFIG_DIR

    options = {path.stem for path in (CONFIG_DIR / "optimizer").glob("*.yaml")}
    assert options == set(OPTIMIZER_CLASSES) | {"sparse_adam"}  # sparse_adam: tested above
    for option, expected_class in OPTIMIZER_CLASSES.items():
        cfg = compose(tmp_path, tiny_data, f"optimizer={option}", "scheduler=none")
        _, optimizer = optimizer_of(cfg)
        assert type(optimizer) is expected_class, option
        for key, value in OmegaConf.to_container(cfg.optimizer).items():
            if key != "_target_":
                got = optimizer.defaults[key]
                assert (list(got) if isinstance(got, tuple) else got) == value, (option, key)
        assert {group["lr"] for group in optimizer.param_groups} == {cfg.optimizer.lr}


@pytest.mark.parametrize("overrides,message", [
    (["optimizer=lbfgs", "trainer.accumulate_grad_batches=2"], "optimizer=lbfgs cannot accumulate gradients"),
    (["callbacks=finetune", "scheduler=onecycle"], "callbacks.finetune cannot add parameter groups under OneCycleLR"),
    (["callbacks=finetune", "optimizer=lbfgs", "scheduler=none"],
     "callbacks.finetune cannot unfreeze into optimizer=lbfgs"),
    (["optimizer.lr=-1"], r"optimizer \(torch.optim.Adam\) cannot be built with these settings: Invalid learning rate"),
    (["scheduler=lambda", "scheduler.scheduler.function=no.such.function"], "cannot import 'no.such.function'"),
])
def test_combinations_that_would_fail_later_are_refused_before_training(overrides, message, tmp_path, tiny_data):
    cfg = compose(tmp_path, tiny_data, *overrides)
    datamodule, module, trainer = build(cfg)
    with pytest.raises(UserError, match=message):
        trainer.fit(module, datamodule=datamodule)
    assert trainer.global_step == 0


def test_learning_rate_finder_sets_the_peak_of_a_one_cycle_schedule(tmp_path, tiny_data):
    cfg = compose(tmp_path, tiny_data, "lr_finder.enabled=true", "lr_finder.num_steps=20", "lr_finder.max_lr=0.05",
                  "lr_finder.early_stop_threshold=null", "scheduler=onecycle", "trainer.max_epochs=4")
    train(cfg)
    found = json.loads((tmp_path / "run" / "lr_finder.json").read_text())
    used = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)["hyper_parameters"]
    assert used["scheduler"]["scheduler"]["max_lr"] == used["optimizer"]["lr"] == found["suggestion"]


def test_learning_rate_finder_is_skipped_when_a_run_resumes(tmp_path, tiny_data, capsys):
    train(compose(tmp_path / "first", tiny_data, "trainer.max_epochs=1"))
    checkpoint = tmp_path / "first" / "run" / "checkpoints" / "last.ckpt"
    train(compose(tmp_path, tiny_data, "lr_finder.enabled=true", f"ckpt_path={checkpoint}", "trainer.max_epochs=2"))
    assert "lr finder: skipped: this run continues from a checkpoint" in capsys.readouterr().out
    assert not (tmp_path / "run" / "lr_finder.json").exists()
    assert torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 1
