"""Tables through `python run.py`: both experiments in debug size with their TensorBoard tags, a table never seen
before with only data.path and data.target, and mode=predict / export of a trained table model."""
import csv
import json

import pandas as pd
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from datamodules.table import TableDataModule
from lightning_modules.tasks.regression import RegressionModule
from tests.conftest import run_cli, synthetic_table, write_tiny_tables


def run_folder(logs, experiment: str):
    return next((logs / experiment).glob("run_*"))


@pytest.mark.parametrize("experiment, tags", [
    ("ames_price", {"test/rmse", "test/mae", "test/r2", "test/rmse_log", "val/rmse_log", "train/rmse_log",
                    "train/r2", "val/rmse"}),
    ("churn", {"test/acc", "test/auroc", "test/f1", "val/auroc", "val/f1", "train/acc"}),
])
def test_each_experiment_runs_in_debug_size_with_its_tensorboard_tags(tmp_path, experiment, tags):
    data = write_tiny_tables(tmp_path / "data")
    result = run_cli(f"experiment={experiment}", f"paths.data_dir={data}", f"paths.log_dir={tmp_path / 'logs'}",
                     "trainer.max_epochs=2", "print_config=false")
    assert result.returncode == 0, result.stderr[-3000:]
    folder = run_folder(tmp_path / "logs", experiment)
    events = EventAccumulator(str(folder), size_guidance={"images": 0}).Reload()
    assert tags <= set(events.Tags()["scalars"])
    metrics = json.loads((folder / "metrics.json").read_text())
    assert f"best_{'val/rmse_log' if experiment == 'ames_price' else 'val/acc'}" in metrics["metrics"]
    if experiment == "ames_price":  # the pictures of a regression's test
        assert {"test/predicted_vs_actual", "test/residuals"} <= set(events.Tags()["images"])
    checkpoint = torch.load(next((folder / "checkpoints").glob("epoch*.ckpt")), weights_only=True)
    assert checkpoint["TableDataModule"]["task"] == ("regression" if experiment == "ames_price" else "classification")


def test_a_new_table_with_only_path_and_target_reaches_the_noise_level(tmp_path):
    """y = 3 x1 - 2 x2 + effect[colour] + noise (sd 0.5): the test RMSE is within 10% of the noise's."""
    table = synthetic_table(6000, noise=0.5).drop(columns=["big", "id"])
    table.to_csv(tmp_path / "measurements.csv", index=False)
    result = run_cli("data=table", f"data.path={tmp_path / 'measurements.csv'}", "data.target=y",
                     f"paths.log_dir={tmp_path / 'logs'}", "print_config=false", "logger=none")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_folder(tmp_path / "logs", "table_tabular_mlp") / "metrics.json").read_text())
    assert "best_val/rmse" in metrics["metrics"]
    assert metrics["metrics"]["test/rmse"] <= 0.55


def test_predict_writes_original_units_for_new_rows_and_matches_the_test_time_output(tmp_path):
    table = synthetic_table(600).drop(columns=["big"])
    table.assign(y=lambda t: t.y + 20).to_csv(tmp_path / "train.csv", index=False)
    trained = run_cli("data=table", f"data.path={tmp_path / 'train.csv'}", "data.target=y", "data.id_column=id",
                      "data.target_transform=log", f"paths.log_dir={tmp_path / 'logs'}", "trainer.max_epochs=3",
                      "print_config=false", "logger=none")
    assert trained.returncode == 0, trained.stderr[-3000:]
    folder = run_folder(tmp_path / "logs", "table_tabular_mlp")
    checkpoint = next((folder / "checkpoints").glob("epoch*.ckpt"))
    rows = pd.read_csv(tmp_path / "train.csv").head(5)
    new = rows.drop(columns=["y"])[["size", "x3", "colour", "id", "x2", "x1"]]  # no target, another order
    new.loc[0, "colour"] = "purple"
    new.to_csv(tmp_path / "new.csv", index=False)
    predicted = run_cli("mode=predict", f"ckpt_path={checkpoint}", f"data.predict_path={tmp_path / 'new.csv'}")
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    assert "read as 'unknown': colour 1" in predicted.stdout + predicted.stderr
    with open(folder / "predict_001" / "predictions.csv") as file:
        written = list(csv.DictReader(file))
    assert [row["id"] for row in written] == list(rows.id) and all(row["target"] == "" for row in written)
    # The same rows through the checkpoint in this process: the model's own output, in original units.
    saved = torch.load(checkpoint, weights_only=True)
    data = TableDataModule(**saved["datamodule_hyper_parameters"])
    data.load_state_dict(saved["TableDataModule"])
    module = RegressionModule.load_from_checkpoint(checkpoint, map_location="cpu").eval()
    numeric, categorical, _ = data.encode(rows, "train.csv", with_target=True)
    with torch.no_grad():
        expected = module.original_units(module(numeric, categorical))
    assert [float(row["predicted"]) for row in written][1:] == pytest.approx(expected[1:].tolist(), rel=1e-6)
    assert float(written[0]["predicted"]) != pytest.approx(float(expected[0]), rel=1e-6)  # purple: unknown
    exported = run_cli("mode=export", f"ckpt_path={checkpoint}")
    assert exported.returncode == 0, exported.stderr[-3000:]
    preprocessing = json.loads((folder / "export_001" / "preprocessing.json").read_text())
    assert preprocessing["target_scaling"]["transform"] == "log"
    assert preprocessing["categorical"]["colour"] == saved["TableDataModule"]["categorical"]["colour"]


def test_classification_predictions_have_a_probability_per_class(tmp_path):
    table = synthetic_table(400).drop(columns=["y"])
    table.to_csv(tmp_path / "t.csv", index=False)
    trained = run_cli("data=table", f"data.path={tmp_path / 't.csv'}", "data.target=big", "data.drop=[id]",
                      f"paths.log_dir={tmp_path / 'logs'}", "trainer.max_epochs=2", "print_config=false",
                      "logger=none")
    assert trained.returncode == 0, trained.stderr[-3000:]
    folder = run_folder(tmp_path / "logs", "table_tabular_mlp")
    table.head(4).drop(columns=["big"]).to_csv(tmp_path / "new.csv", index=False)
    predicted = run_cli("mode=predict", f"ckpt_path={next((folder / 'checkpoints').glob('epoch*.ckpt'))}",
                        f"predict_input={tmp_path / 'new.csv'}")
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    with open(folder / "predict_001" / "predictions.csv") as file:
        written = list(csv.DictReader(file))
    assert list(written[0]) == ["id", "label", "predicted", "probability_no", "probability_yes"]
    assert len(written) == 4 and all(row["predicted"] in ("no", "yes") for row in written)
    assert all(abs(float(r["probability_no"]) + float(r["probability_yes"]) - 1) < 1e-5 for r in written)


def test_a_sweep_over_a_table_summarises_by_the_settled_monitor(tmp_path):
    synthetic_table(300).drop(columns=["big", "id"]).to_csv(tmp_path / "t.csv", index=False)
    result = run_cli("-m", "data=table", f"data.path={tmp_path / 't.csv'}", "data.target=y", "model.dropout=0.0,0.2",
                     f"paths.log_dir={tmp_path / 'logs'}", "trainer.max_epochs=2", "logger=none", "sweep_name=s")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = next((tmp_path / "logs").rglob("summary.md")).read_text()
    assert "2 of 2 jobs completed; `val/rmse` is minimised" in summary
