"""mode=test / predict / export of a trained checkpoint, and what every run records about how it was started."""
import csv
import gzip
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lightning_modules.tasks.classification import ClassificationModule
from tests.conftest import ROOT, quick_overrides, run_cli, write_tiny_mnist, write_tiny_text

QUIET = "print_config=false"


@pytest.fixture(scope="module")
def weak_run(tmp_path_factory):
    """One short epoch at a small learning rate: a test accuracy well below 1, so a wrong prediction shows."""
    base = tmp_path_factory.mktemp("checkpoint_modes")
    data = write_tiny_mnist(base / "data")
    result = run_cli(*quick_overrides(data, base / "logs"), "trainer.max_epochs=1", "optimizer.lr=3e-4",
                     "run_name=weak")
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = base / "logs" / "mnist_mlp" / "weak"
    summary = json.loads((run_dir / "metrics.json").read_text())
    assert 0.3 < summary["metrics"]["test/acc"] < 0.99
    return {"base": base, "data": data, "run_dir": run_dir, "checkpoint": summary["best_checkpoint"],
            "metrics": summary["metrics"], "stdout": result.stdout}


def read_predictions(path: Path) -> tuple[list[str], list[dict]]:
    with open(path, newline="") as file:
        reader = csv.DictReader(file)
        return reader.fieldnames, list(reader)


def probabilities(row: dict) -> np.ndarray:
    return np.array([float(value) for key, value in row.items() if key.startswith("probability_")])


def test_mode_test_reproduces_the_runs_test_metrics_in_a_folder_of_its_own(weak_run):
    run_dir = weak_run["run_dir"]
    before = {path: path.read_bytes() for path in run_dir.rglob("*") if path.is_file()}
    result = run_cli("mode=test", f"ckpt_path={weak_run['checkpoint']}", QUIET)
    assert result.returncode == 0, result.stderr[-3000:]
    evaluation = run_dir / sorted(p.name for p in run_dir.glob("test_*"))[-1]  # the next free test_NNN
    metrics = json.loads((evaluation / "metrics.json").read_text())["metrics"]
    assert metrics["test/acc"] == weak_run["metrics"]["test/acc"]
    assert metrics["test/loss"] == pytest.approx(weak_run["metrics"]["test/loss"], abs=1e-6)
    events = EventAccumulator(str(evaluation))
    events.Reload()
    assert events.Scalars("test/acc")[0].value == pytest.approx(metrics["test/acc"])
    assert all(path.read_bytes() == content for path, content in before.items())  # the run itself is untouched
    # The run's own config, not conf/'s defaults: the network is the run's 32-unit MLP.
    assert OmegaConf.load(evaluation / "config.yaml").model.hidden_dims == [32]


def test_single_keys_can_be_changed_for_an_evaluation(weak_run):
    result = run_cli("mode=test", f"ckpt_path={weak_run['checkpoint']}", "data.eval_batch_size=10", QUIET,
                     "run_name=small_batches")
    assert result.returncode == 0, result.stderr[-3000:]
    evaluation = weak_run["run_dir"] / "small_batches"
    assert f"run directory:   {evaluation}" in result.stdout
    assert OmegaConf.load(evaluation / "config.yaml").data.eval_batch_size == 10
    metrics = json.loads((evaluation / "metrics.json").read_text())["metrics"]
    assert metrics["test/acc"] == weak_run["metrics"]["test/acc"]  # batch size does not change the predictions


def test_predictions_csv_has_a_row_per_test_image_and_reproduces_the_test_accuracy(weak_run):
    result = run_cli("mode=predict", f"ckpt_path={weak_run['checkpoint']}", QUIET, "run_name=predicted")
    assert result.returncode == 0, result.stderr[-3000:]
    columns, rows = read_predictions(weak_run["run_dir"] / "predicted" / "predictions.csv")
    assert columns == ["id", "label", "predicted", *(f"probability_{digit}" for digit in range(10))]
    raw = gzip.decompress((weak_run["data"] / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz").read_bytes())
    true_labels = [str(label) for label in raw[8:]]
    assert [row["id"] for row in rows] == [str(i) for i in range(64)]
    assert [row["label"] for row in rows] == true_labels
    for row in rows:
        assert probabilities(row).sum() == pytest.approx(1, abs=1e-4)
        assert row["predicted"] == str(int(probabilities(row).argmax()))
    accuracy = sum(row["predicted"] == row["label"] for row in rows) / len(rows)
    assert accuracy == pytest.approx(weak_run["metrics"]["test/acc"], abs=1e-6)  # logged as float32


def test_new_png_and_npy_images_get_the_predictions_of_the_same_test_images(weak_run):
    from PIL import Image

    raw = gzip.decompress((weak_run["data"] / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz").read_bytes())
    images = np.frombuffer(raw, np.uint8, offset=16).reshape(-1, 28, 28)
    folder = weak_run["base"] / "new_images"
    folder.mkdir()
    Image.fromarray(images[0]).save(folder / "a.png")
    np.save(folder / "b.npy", images[1:4].astype(np.float32) / 255)  # floats in [0, 1], a stack of three
    np.save(folder / "c.npy", images[4][:, :, None])  # one (H, W, C) image
    (folder / "notes.md").write_text("not an image: ignored")
    test_split = run_cli("mode=predict", f"ckpt_path={weak_run['checkpoint']}", QUIET, "run_name=on_test_split")
    new = run_cli("mode=predict", f"ckpt_path={weak_run['checkpoint']}", f"predict_input={folder}", QUIET,
                  "run_name=on_new_images")
    assert test_split.returncode == 0 and new.returncode == 0, new.stderr[-3000:]
    _, expected = read_predictions(weak_run["run_dir"] / "on_test_split" / "predictions.csv")
    _, rows = read_predictions(weak_run["run_dir"] / "on_new_images" / "predictions.csv")
    assert [row["id"] for row in rows] == ["a.png", "b.npy[0]", "b.npy[1]", "b.npy[2]", "c.npy"]
    assert all(row["label"] == "" for row in rows)
    for row, reference in zip(rows, expected[:5]):
        np.testing.assert_allclose(probabilities(row), probabilities(reference), atol=2e-6)


@pytest.mark.parametrize("arguments, message", [
    (["mode=test"], "add ckpt_path="),
    (["mode=test", "ckpt_path=nowhere/epoch000.ckpt"], "ckpt_path=nowhere/epoch000.ckpt: no such file"),
    (["mode=test", "ckpt_path=LOOSE"], "this checkpoint has none. Keep checkpoints inside their run folder"),
    (["mode=test", "CHECKPOINT", "data=cifar10"], "`data=cifar10`: mode=test uses the checkpoint's own config"),
    (["mode=test", "CHECKPOINT", "debug=limit_batches"], "`debug=limit_batches`: mode=test uses the checkpoint's own"),
    (["mode=test", "CHECKPOINT", "~callbacks.evaluation_images"], "keeps every key of the run's config; set a value"),
    (["mode=test", "CHECKPOINT", "trainer.accelerator=gpu"],
     "trainer.accelerator=gpu, but no GPU was found"),
    (["mode=predict", "CHECKPOINT", "predict_input=BIG_PNG"], "is 32x32 pixels; this network takes 28x28 images"),
    (["mode=predict", "CHECKPOINT", "predict_input=nowhere"], "predict_input=nowhere does not exist"),
    (["mode=predict", "CHECKPOINT", "predict_input=TEXT_FILE"], "holds no .png/.npy file"),
    (["-m", "mode=test", "CHECKPOINT"], "mode=test uses one checkpoint: run it without -m"),
])
def test_bad_checkpoint_mode_input_is_named_and_exits_non_zero(weak_run, arguments, message, tmp_path):
    from PIL import Image

    if torch.cuda.is_available() and "trainer.accelerator=gpu" in arguments:
        pytest.skip("this machine has a GPU")
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "big.png")
    (tmp_path / "lines.txt").write_text("a text\n")
    (tmp_path / "loose.ckpt").write_bytes(Path(weak_run["checkpoint"]).read_bytes())  # outside any run folder
    replacements = {"CHECKPOINT": f"ckpt_path={weak_run['checkpoint']}",
                    "predict_input=BIG_PNG": f"predict_input={tmp_path / 'big.png'}",
                    "predict_input=TEXT_FILE": f"predict_input={tmp_path / 'lines.txt'}",
                    "ckpt_path=LOOSE": f"ckpt_path={tmp_path / 'loose.ckpt'}"}
    result = run_cli(*[replacements.get(a, a) for a in arguments], QUIET, f"paths.log_dir={tmp_path / 'logs'}")
    # lightlab's checks exit 2; in a sweep (-m) the job is recorded as failed and the sweep exits 1
    assert result.returncode == (1 if "-m" in arguments else 2), result.stderr[-3000:]
    assert message in result.stderr and "Traceback" not in result.stderr


def test_only_classifiers_are_exported(tmp_path):
    data = write_tiny_mnist(tmp_path / "data")
    trained = run_cli("experiment=mnist_multitask", *quick_overrides(data, tmp_path / "logs"), "trainer.max_epochs=1",
                      "run_name=multitask", QUIET)
    assert trained.returncode == 0, trained.stderr[-3000:]
    checkpoint = json.loads((tmp_path / "logs" / "mnist_multitask" / "multitask" / "metrics.json").read_text())
    result = run_cli("mode=export", f"ckpt_path={checkpoint['best_checkpoint']}", QUIET, "run_name=exported")
    assert result.returncode == 2, result.stderr[-3000:]
    assert "mode=export writes a classifier's network; MultiTaskModule adds heads" in result.stderr
    assert not list((tmp_path / "logs" / "mnist_multitask" / "multitask" / "exported").glob("network*"))


def test_text_predictions_follow_the_test_split_and_new_lines(tmp_path):
    data = write_tiny_text(tmp_path / "data")
    overrides = [f"paths.data_dir={data}", f"paths.log_dir={tmp_path / 'logs'}",
                 f"paths.cache_dir={tmp_path / 'cache'}",
                 "data=sst2", "model=lstm", "model.embedding_dim=16", "model.hidden_size=16", "trainer.max_epochs=1",
                 "data.val_size=50", "run_name=text", QUIET]
    trained = run_cli(*overrides)
    assert trained.returncode == 0, trained.stderr[-3000:]
    run_dir = tmp_path / "logs" / "sst2_lstm" / "text"
    summary = json.loads((run_dir / "metrics.json").read_text())
    on_test = run_cli("mode=predict", f"ckpt_path={summary['best_checkpoint']}", QUIET, "run_name=test_split")
    assert on_test.returncode == 0, on_test.stderr[-3000:]
    _, rows = read_predictions(run_dir / "test_split" / "predictions.csv")
    assert len(rows) == 80
    accuracy = sum(row["predicted"] == row["label"] for row in rows) / len(rows)
    assert accuracy == pytest.approx(summary["metrics"]["test/acc"], abs=1e-6)  # logged as float32
    dev = (data / "sst2" / "dev.tsv").read_text().splitlines()[1:4]
    (tmp_path / "new.txt").write_text("\n".join(line.split("\t")[0] for line in dev) + "\n\n")
    on_lines = run_cli("mode=predict", f"ckpt_path={summary['best_checkpoint']}",
                       f"predict_input={tmp_path / 'new.txt'}", QUIET, "run_name=lines")
    assert on_lines.returncode == 0, on_lines.stderr[-3000:]
    _, new_rows = read_predictions(run_dir / "lines" / "predictions.csv")
    assert [row["id"] for row in new_rows] == ["new.txt:1", "new.txt:2", "new.txt:3"]  # the empty line is skipped
    for row, reference in zip(new_rows, rows[:3]):
        np.testing.assert_allclose(probabilities(row), probabilities(reference), atol=2e-6)


def test_a_run_records_its_command_git_commit_and_package_versions(weak_run):
    provenance = json.loads((weak_run["run_dir"] / "provenance.json").read_text())
    def git(*args):
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True).stdout.strip()
    assert provenance["git"]["commit"] == git("rev-parse", "HEAD")
    assert provenance["git"]["dirty"] == bool(git("status", "--porcelain"))
    assert provenance["packages"]["torch"] == torch.__version__
    assert "run.py" in provenance["command"] and "run_name=weak" in provenance["command"]
    # The config tree printed at the start (print_config=true, the default); the modes above ran with it off.
    assert "config (mnist_mlp)" in weak_run["stdout"] and "hidden_dims: [32]" in weak_run["stdout"]


def test_export_writes_a_bare_state_dict_torchscript_and_onnx_that_match_the_checkpoint(weak_run):
    result = run_cli("mode=export", f"ckpt_path={weak_run['checkpoint']}", QUIET, "run_name=exported")
    assert result.returncode == 0, result.stderr[-3000:]
    folder = weak_run["run_dir"] / "exported"
    images = torch.randn(5, 1, 28, 28)
    expected = ClassificationModule.load_from_checkpoint(weak_run["checkpoint"], map_location="cpu").eval()(images)
    # The seed's recipe, without Lightning: build the class, load the state_dict.
    network = instantiate(OmegaConf.to_container(OmegaConf.load(folder / "network.yaml")))
    network.load_state_dict(torch.load(folder / "network.pt", weights_only=True))
    torch.testing.assert_close(network.eval()(images), expected, atol=1e-6, rtol=0)
    scripted = torch.jit.load(str(folder / "network.torchscript.pt"))
    torch.testing.assert_close(scripted(images), expected, atol=1e-5, rtol=0)
    preprocessing = json.loads((folder / "preprocessing.json").read_text())
    assert preprocessing["classes"] == [str(digit) for digit in range(10)] and preprocessing["mean"] == 0.1307
    import onnxruntime  # a dev dependency (pyproject.toml)

    session = onnxruntime.InferenceSession(str(folder / "network.onnx"))
    outputs = session.run(None, {session.get_inputs()[0].name: images.numpy()})[0]
    np.testing.assert_allclose(outputs, expected.detach().numpy(), atol=1e-4)
