"""Each loss against the textbook formula written out here, and every conf/loss option builds and runs."""
import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate

from lightlab.base.errors import UserError
from lightlab.config.checks import check_config
from lightlab.run.compose import CONFIG_DIR, compose_config
from lightning_modules.losses import (
    BCEWithLogitsLoss,
    CrossEntropyLoss,
    FocalLoss,
    L1Loss,
    MSELoss,
    NLLLoss,
    SmoothL1Loss,
)

# (loss=auto is data=table's placeholder for the task's loss: tests/unit/test_tables.py checks what it becomes)
LOSSES = sorted(p.stem for p in (CONFIG_DIR / "loss").glob("*.yaml") if p.stem != "auto")
CLASSES = 5


@pytest.fixture
def batch():
    generator = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(16, CLASSES, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, CLASSES, (16,), generator=generator)
    return logits, labels


def log_probabilities(logits):
    return logits - logits.exp().sum(1, keepdim=True).log()


def one_hot(labels):
    return (labels.unsqueeze(1) == torch.arange(CLASSES)).double()


def test_cross_entropy_with_class_weights_and_label_smoothing(batch):
    logits, labels = batch
    weights, smoothing = [1.0, 2.0, 0.5, 3.0, 1.5], 0.1
    log_p, w = log_probabilities(logits), torch.tensor(weights, dtype=torch.float64)
    # PyTorch's definition: the smoothed target puts 1 - smoothing on the label and smoothing / C on every
    # class, each term weighted by its class; 'mean' divides by the summed weights of the labels.
    per_example = (1 - smoothing) * -w[labels] * log_p[range(16), labels] - smoothing / CLASSES * (w * log_p).sum(1)
    expected = per_example.sum() / w[labels].sum()
    loss = CrossEntropyLoss(class_weights=weights, label_smoothing=smoothing).double()
    assert torch.allclose(loss(logits, labels), expected)


def test_nll_on_log_softmax(batch):
    logits, labels = batch
    weights = [1.0, 2.0, 0.5, 3.0, 1.5]
    log_p, w = log_probabilities(logits), torch.tensor(weights, dtype=torch.float64)
    expected = -(w[labels] * log_p[range(16), labels]).sum() / w[labels].sum()
    loss = NLLLoss(class_weights=weights).double()
    assert torch.allclose(loss(torch.log_softmax(logits, 1), labels), expected)
    assert torch.allclose(NLLLoss()(torch.log_softmax(logits, 1), labels), -log_p[range(16), labels].mean())


def test_focal_with_per_class_alpha(batch):
    logits, labels = batch
    alpha = [0.25, 0.5, 0.75, 1.0, 2.0]
    p_t = logits.softmax(1)[range(16), labels]
    per_example = -torch.tensor(alpha, dtype=torch.float64)[labels] * (1 - p_t) ** 2 * p_t.log()
    loss = FocalLoss(alpha=alpha, gamma=2.0)
    assert torch.allclose(loss(logits, labels), per_example.mean())
    assert torch.allclose(FocalLoss(alpha=alpha, reduction="sum")(logits, labels), per_example.sum())
    assert torch.allclose(FocalLoss(alpha=alpha, reduction="none")(logits, labels), per_example)
    # One number scales every class alike.
    unweighted = (-(1 - p_t) ** 2 * p_t.log()).mean()
    assert torch.allclose(FocalLoss(alpha=0.25)(logits, labels), 0.25 * unweighted)


@pytest.mark.parametrize("shape", [(16, CLASSES), (4, CLASSES, 3, 2)], ids=["batch", "per_pixel"])
def test_focal_without_focusing_or_alpha_is_cross_entropy(shape):
    torch.manual_seed(0)
    logits = 4 * torch.randn(shape)
    labels = torch.randint(0, CLASSES, (shape[0], *shape[2:]))
    focal = FocalLoss(alpha=None, gamma=0.0)(logits, labels)
    assert torch.allclose(focal, torch.nn.functional.cross_entropy(logits, labels), rtol=0, atol=1e-6)


def test_focal_is_finite_for_confident_predictions():
    logits = torch.tensor([[200.0, -200.0], [-200.0, 200.0]], requires_grad=True)
    loss = FocalLoss(gamma=2.0)(logits, torch.tensor([0, 0]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()


def test_bce_with_int_labels_is_one_vs_rest(batch):
    logits, labels = batch
    pos_weight = [1.0, 2.0, 3.0, 4.0, 5.0]
    y, sigmoid = one_hot(labels), 1 / (1 + (-logits).exp())
    plain = -(y * sigmoid.log() + (1 - y) * (1 - sigmoid).log()).mean()
    weighted = -(torch.tensor(pos_weight, dtype=torch.float64) * y * sigmoid.log()
                 + (1 - y) * (1 - sigmoid).log()).mean()
    assert torch.allclose(BCEWithLogitsLoss()(logits, labels), plain)
    assert torch.allclose(BCEWithLogitsLoss(pos_weight=pos_weight)(logits, labels), weighted)
    assert torch.allclose(BCEWithLogitsLoss()(logits, y), plain)  # multi-hot float targets pass through


def test_bce_binary_with_0_1_targets_of_the_outputs_shape():
    logits, targets = torch.tensor([2.0, -1.0, 0.5]), torch.tensor([1, 0, 0])
    sigmoid = torch.sigmoid(logits)
    expected = -(targets * sigmoid.log() + (1 - targets) * (1 - sigmoid).log()).mean()
    assert torch.allclose(BCEWithLogitsLoss()(logits, targets), expected)


def smooth_l1(difference, beta):
    absolute = difference.abs()
    return torch.where(absolute < beta, 0.5 * absolute ** 2 / beta, absolute - 0.5 * beta).mean()


REGRESSION = {
    "mse": (MSELoss(), lambda difference: (difference ** 2).mean()),
    "l1": (L1Loss(), lambda difference: difference.abs().mean()),
    "smooth_l1": (SmoothL1Loss(beta=0.5), lambda difference: smooth_l1(difference, 0.5)),
}


@pytest.mark.parametrize("name", REGRESSION)
def test_regression_losses_with_int_labels_and_float_targets(name, batch):
    loss, formula = REGRESSION[name]
    logits, labels = batch
    assert torch.allclose(loss(logits, labels), formula(logits - one_hot(labels)))
    targets = torch.randn_like(logits)
    assert torch.allclose(loss(logits, targets), formula(logits - targets))


@pytest.mark.parametrize("make_loss,buffer", [
    (lambda: CrossEntropyLoss(class_weights=[1.0, 2.0]), "weight"),
    (lambda: NLLLoss(class_weights=[1.0, 2.0]), "weight"),
    (lambda: FocalLoss(alpha=[0.25, 0.75]), "alpha"), (lambda: FocalLoss(alpha=0.25), "alpha"),
    (lambda: BCEWithLogitsLoss(pos_weight=[1.0, 2.0]), "pos_weight")],
    ids=["cross_entropy", "nll", "focal_per_class", "focal_scalar", "bce_with_logits"])
def test_class_weights_are_buffers_that_follow_the_module(make_loss, buffer):
    loss = make_loss()
    assert buffer in dict(loss.named_buffers()) and buffer in loss.state_dict()
    assert getattr(loss.to(torch.float64), buffer).dtype == torch.float64
    assert getattr(loss.to("meta"), buffer).device.type == "meta"  # moves with the module, as to a GPU


@pytest.mark.parametrize("name", LOSSES)
def test_every_loss_config_checks_builds_and_gives_a_finite_scalar(name, tmp_path):
    cfg = compose_config([f"loss={name}"], output_dir=str(tmp_path))
    check_config(cfg)  # the YAML values fit the annotated constructor
    loss = instantiate(cfg.loss, _convert_="all")
    assert isinstance(loss, torch.nn.Module)
    torch.manual_seed(0)
    logits = torch.randn(8, 10, requires_grad=True)
    value = loss(logits, torch.randint(0, 10, (8,)))
    value.backward()
    assert value.dim() == 0 and torch.isfinite(value) and torch.isfinite(logits.grad).all()


def test_config_checker_reads_the_loss_annotations(tmp_path):
    check_config(compose_config(["loss=focal", "loss.alpha=[1,2,0.5]"], output_dir=str(tmp_path)))
    check_config(compose_config(["loss=cross_entropy", "loss.class_weights=[1,2]"], output_dir=str(tmp_path)))
    with pytest.raises(UserError, match="class_weights"):
        check_config(compose_config(["loss=cross_entropy", "loss.class_weights=heavy"], output_dir=str(tmp_path)))
    with pytest.raises(UserError, match="gamma"):
        check_config(compose_config(["loss=focal", "loss.gamma=[2]"], output_dir=str(tmp_path)))


def test_loss_nll_makes_the_module_output_log_probabilities(tmp_path, tiny_data):
    from run import build
    from tests.conftest import quick_overrides

    _, with_nll, _ = build(compose_config(["loss=nll", *quick_overrides(tiny_data, tmp_path)], str(tmp_path)))
    images = torch.randn(5, 1, 28, 28)
    log_probabilities = with_nll(images)
    torch.testing.assert_close(log_probabilities.logsumexp(dim=1), torch.zeros(5))
    torch.testing.assert_close(log_probabilities, with_nll.net(images).log_softmax(dim=1))
    # so NLL on the module's output is cross-entropy on the network's logits
    labels = torch.arange(5)
    torch.testing.assert_close(with_nll.loss(log_probabilities, labels), F.cross_entropy(with_nll.net(images), labels))
