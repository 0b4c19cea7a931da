"""Optimisation recipes on the real data: fine-tuning MNIST features on Fashion-MNIST, and LBFGS."""
import json

from tests.conftest import require_real_data, run_cli
from tests.unit.test_optimizers import scalars


def test_mnist_features_fine_tuned_on_fashion_mnist(tmp_path):
    """The shipped fine-tuning experiment on real data, from a (shortened) MNIST pretraining run."""
    data = require_real_data("FashionMNIST")
    require_real_data("MNIST")
    logs = tmp_path / "logs"
    pretrain = run_cli("experiment=mnist_mlp", "run_name=pretrained", "trainer.max_epochs=3", f"paths.data_dir={data}",
                       f"paths.log_dir={logs}")
    assert pretrain.returncode == 0, pretrain.stderr[-2000:]
    source = logs / "mnist_mlp" / "pretrained" / "checkpoints" / "last.ckpt"
    result = run_cli("experiment=fashion_mnist_finetune", f"init_from={source}", "run_name=finetuned",
                     f"paths.data_dir={data}", f"paths.log_dir={logs}")
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((logs / "fashion_mnist_finetune" / "finetuned" / "metrics.json").read_text())["metrics"]
    assert metrics["test/acc"] >= 0.86


def test_lbfgs_learns_real_mnist(tmp_path):
    data = require_real_data("MNIST")
    result = run_cli("optimizer=lbfgs", "trainer.max_epochs=1", "trainer.limit_train_batches=100",
                     "trainer.log_every_n_steps=10", f"paths.data_dir={data}", f"paths.log_dir={tmp_path}",
                     "run_name=lbfgs")
    assert result.returncode == 0, result.stderr[-2000:]
    run_dir = tmp_path / "mnist_mlp" / "lbfgs"
    step_losses = scalars(run_dir, "train/loss_step")
    assert len(step_losses) == 10 and step_losses[-1] < 0.3 * step_losses[0]
    assert json.loads((run_dir / "metrics.json").read_text())["metrics"]["test/acc"] >= 0.9
