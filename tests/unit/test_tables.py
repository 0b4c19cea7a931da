"""Tables: the column rules, preprocessing fitted on the training rows only, the encoding of new rows, the tabular
network and the regression module's metrics, in-process on synthetic tables."""
import json
import logging
import math

import numpy as np
import pandas as pd
import pytest
import torch

from datamodules.table import TableDataModule
from datamodules.table_columns import Preprocessing, column_kinds, infer_task
from lightlab.base.errors import UserError
from lightlab.base.objects import build
from lightlab.config.table_task import settle_task
from lightlab.run.compose import compose_config
from lightning_modules.tasks.regression import RegressionModule
from tests.conftest import synthetic_table

SETTINGS = dict(batch_size=32, eval_batch_size=64, test_fraction=0.2, val_fraction=0.1, min_category_count=5,
                max_integer_categories=10, max_integer_classes=20)


def datamodule(tmp_path, **settings) -> TableDataModule:
    return TableDataModule(str(tmp_path), **{**SETTINGS, "target": "y", "drop": ["big"], **settings})


@pytest.mark.parametrize("values, task", [
    (["a", "b", "a"], "classification"), ([True, False, True], "classification"), ([1, 2, 3, 1], "classification"),
    ([1.0, 2.0, None, 1.0], "classification"), ([0.5, 1.25, 3.0], "regression"), (list(range(25)), "regression"),
])
def test_the_task_follows_from_the_target_column(values, task):
    assert infer_task(pd.Series(values), max_integer_classes=20) == task


def test_column_kinds_follow_the_stated_rules():
    frame = pd.DataFrame({"text": ["a", "b"] * 10, "flag": [True, False] * 10, "code": [1, 2, 3, 4] * 5,
                          "count": list(range(20)), "real": np.linspace(0, 1, 20)})
    assert column_kinds(frame, "f.csv", None, None, max_integer_categories=4) == (["count", "real"],
                                                                                 ["text", "flag", "code"])
    assert column_kinds(frame, "f.csv", ["count"], ["code"], max_integer_categories=4) == (["code", "real"],
                                                                                          ["text", "flag", "count"])
    typo = pd.DataFrame({"area": [str(v) for v in range(30)] + ["12,5"]})
    with pytest.raises(UserError, match=r"f.csv: column 'area' holds numbers, but row 31 .* has '12,5'"):
        column_kinds(typo, "f.csv", None, None, max_integer_categories=0)


def write_splits(tmp_path, train: pd.DataFrame, val: pd.DataFrame, test: pd.DataFrame) -> dict:
    for name, frame in (("train", train), ("val", val), ("test", test)):
        frame.to_csv(tmp_path / f"{name}.csv", index=False)
    return dict(train_path="train.csv", val_path="val.csv", test_path="test.csv")


def test_preprocessing_is_fitted_on_the_training_rows_alone(tmp_path):
    table = synthetic_table(300)
    train, val, test = table[:200], table[200:250].copy(), table[250:].copy()
    first = datamodule(tmp_path, **write_splits(tmp_path, train, val, test), min_category_count=1)
    first.setup("fit")
    val["colour"], val["x1"] = "purple", 1000.0  # a category and a scale train lacks, only in val and test
    test["colour"], test["x2"] = "orange", -1000.0
    second = datamodule(tmp_path, **write_splits(tmp_path, train, val, test), min_category_count=1)
    second.setup("fit")
    assert second.preprocessing == first.preprocessing
    fitted = second.preprocessing
    assert fitted.categorical["colour"] == sorted(train.colour.unique())  # no purple, no orange
    assert fitted.numeric["x1"]["mean"] == pytest.approx(train.x1.mean())
    assert fitted.numeric["x1"]["std"] == pytest.approx(train.x1.std(ddof=0))
    colour = list(fitted.categorical).index("colour")
    assert (second.splits["validate"][1][:, colour] == 0).all()  # purple: the unknown index
    assert (second.splits["fit"][1][:, colour] > 0).all()


def test_rare_categories_train_the_unknown_index_and_missing_numbers_get_an_indicator(tmp_path):
    table = synthetic_table(400)
    table.loc[:2, "colour"] = "rare"          # 3 rows: rarer than min_category_count=5
    table.loc[::7, "x3"] = np.nan
    table.to_csv(tmp_path / "t.csv", index=False)
    data = datamodule(tmp_path, path="t.csv", drop=["big", "id"])
    data.setup("fit")
    fitted, (numeric, categorical, _) = data.preprocessing, data.splits["fit"]
    assert "rare" not in fitted.categorical["colour"]
    assert (categorical[:, list(fitted.categorical).index("colour")] == 0).sum() >= 1
    assert fitted.numeric["x3"]["indicator"] and not fitted.numeric["x1"]["indicator"]
    assert numeric.shape[1] == fitted.input_width == len(fitted.numeric) + 1
    missing = numeric[:, -1] == 1
    assert missing.any() and (numeric[missing, list(fitted.numeric).index("x3")] == 0).all()


def test_the_fitted_state_is_plain_data_and_encodes_new_rows_in_any_column_order(tmp_path):
    synthetic_table(300).to_csv(tmp_path / "t.csv", index=False)
    data = datamodule(tmp_path, path="t.csv", id_column="id")
    data.setup("fit")
    state = json.loads(json.dumps(data.state_dict()))  # JSON-able: exactly what the checkpoint holds
    assert Preprocessing.from_state(state) == data.preprocessing
    rows = pd.read_csv(tmp_path / "t.csv").head(4)
    shuffled = rows[list(reversed(rows.columns))].drop(columns=["y"])  # other order, no target column
    for encoded, expected in zip(data.encode(shuffled, "new.csv", with_target=False)[:2],
                                 data.encode(rows, "t.csv", with_target=True)[:2]):
        torch.testing.assert_close(encoded, expected)


def test_log_target_and_skewed_columns(tmp_path):
    table = synthetic_table(300).assign(price=lambda t: np.exp(10 + t.y / 5), area=lambda t: np.exp(t.x3 * 2))
    table.to_csv(tmp_path / "t.csv", index=False)
    data = datamodule(tmp_path, path="t.csv", target="price", drop=["y", "big", "id"], target_transform="log",
                      skewed_log1p=True)
    data.setup("fit")
    fitted = data.preprocessing
    assert fitted.numeric["area"]["log1p"] and not fitted.numeric["x1"]["log1p"]
    train_prices = np.log(pd.read_csv(tmp_path / "t.csv").price)
    assert fitted.target_scaling["transform"] == "log"
    assert abs(fitted.target_scaling["mean"] - train_prices.mean()) < 0.2  # the training rows' mean of log price


def test_regression_metrics_are_in_original_and_log_units(tmp_path):
    synthetic_table(300).to_csv(tmp_path / "t.csv", index=False)
    cfg = compose_config(["data=table", f"paths.data_dir={tmp_path}", "data.path=t.csv", "data.target=y",
                          "data.drop=[big]"], output_dir=str(tmp_path))
    settle_task(cfg)
    assert (cfg.data.task, cfg.monitor, cfg.monitor_mode, cfg.loss._target_) == (
        "regression", "val/rmse", "min", "lightning_modules.losses.MSELoss")
    module = RegressionModule(cfg.model, cfg.optimizer, cfg.loss, input_shape=[3], cardinalities=[3],
                              target_scaling={"transform": "log", "mean": 1.0, "std": 2.0})
    outputs, targets = torch.tensor([0.0, 0.5]), torch.tensor([0.5, -0.5])
    module.update_metrics("test", outputs, targets)
    scores = {name: float(metric.compute()) for name, metric in module.metrics["test_metrics"].items()}
    predicted, actual = np.exp([1.0, 2.0]), np.exp([2.0, 0.0])
    assert scores["rmse"] == pytest.approx(math.sqrt(np.mean((predicted - actual) ** 2)), rel=1e-5)
    assert scores["mae"] == pytest.approx(np.mean(abs(predicted - actual)), rel=1e-5)
    assert scores["rmse_log"] == pytest.approx(math.sqrt(np.mean(np.array([-1.0, 2.0]) ** 2)), rel=1e-5)


def test_classification_table_settles_its_keys_and_builds_a_two_class_module(tmp_path):
    synthetic_table(300).to_csv(tmp_path / "t.csv", index=False)
    cfg = compose_config(["data=table", f"paths.data_dir={tmp_path}", "data.path=t.csv", "data.target=big",
                          "data.drop=[y]", "data.class_weights=balanced", "monitor=val/auroc"],
                         output_dir=str(tmp_path))
    settle_task(cfg)
    assert (cfg.data.task, cfg.monitor, cfg.monitor_mode) == ("classification", "val/auroc", "max")
    data = build(cfg.data, "data")
    inputs = data.network_inputs()
    assert inputs["num_classes"] == 2 and data.classes == ["no", "yes"]
    counts = data.preprocessing.class_counts
    assert inputs["class_weights"] == pytest.approx([sum(counts) / (2 * c) for c in counts])


@pytest.mark.parametrize("content, settings, message", [
    ("", {}, r"t.csv is empty"),
    ("a,y\n", {}, r"has a header \(a, y\) but no rows"),
    ("a,b\n1,2\n", {}, r"no column 'y' .* Its columns: a, b"),
    ("a,y\n" + "".join(f"{i},x\n" for i in range(20)), {}, r"the target 'y' has one class"),
    ("a,y\n1,1.5\n2,\n3,2.5\n4,\n5,1.0\n6,2.0\n7,3.5\n8,1.5\n9,0.5\n10,1.25\n", {},
     r"2 row\(s\) have no 'y' \(data rows 2, 4\).*data.drop_missing_target=true"),
    ("a,y\n1,1.5\n2,-1\n" + "".join(f"{i},{i + 0.5}\n" for i in range(20)), {"target_transform": "log"},
     r"needs positive targets"),
])
def test_bad_tables_are_refused_with_the_row_or_column(tmp_path, content, settings, message):
    (tmp_path / "t.csv").write_text(content)
    with pytest.raises(UserError, match=message):
        datamodule(tmp_path, path="t.csv", drop=[], **settings).setup("fit")


def test_missing_targets_can_be_dropped_and_unseen_categories_are_counted_in_one_line(tmp_path, caplog):
    table = synthetic_table(300)
    table.loc[[3, 9], "y"] = np.nan
    table.to_csv(tmp_path / "t.csv", index=False)
    data = datamodule(tmp_path, path="t.csv", drop_missing_target=True, drop=["big", "id"])
    data.setup("fit")
    assert sum(len(split[2]) for split in data.splits.values()) == 298
    new = table.head(3).drop(columns=["y"]).assign(colour=["purple", "red", "orange"])
    with caplog.at_level(logging.WARNING):
        data.encode(new, "new.csv", with_target=False)
    assert [r.getMessage() for r in caplog.records if r.getMessage().startswith("new.csv")] == [
        "new.csv: categories the model did not learn (new, or rarer than data.min_category_count in training) are "
        "read as 'unknown': colour 2"]
    with pytest.raises(UserError, match=r"new.csv: no column 'x1', which the model was trained on"):
        data.encode(new.drop(columns=["x1"]), "new.csv", with_target=False)


def test_review_cases_typos_booleans_unknown_classes_and_tiny_splits(tmp_path):
    table = synthetic_table(200).drop(columns=["big", "id"])
    table["x1"] = table.x1.round(3).astype(str)
    table.loc[150, "x1"] = "1.2O"  # a typo in a row the split may put anywhere: named, whatever the split
    table.to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(UserError, match=r"column 'x1' holds numbers, but row 151 .* has '1.2O'"):
        datamodule(tmp_path, path="t.csv", drop=[]).setup("fit")
    prices = synthetic_table(200).drop(columns=["big", "id"]).astype({"y": str})
    prices.loc[7, "y"] = "1O"  # a numeric target with a typo is not a classification
    prices.to_csv(tmp_path / "p.csv", index=False)
    with pytest.raises(UserError, match=r"column 'y' holds numbers, but row 8"):
        datamodule(tmp_path, path="p.csv", drop=[]).setup("fit")
    flags = synthetic_table(200).drop(columns=["big", "id"]).assign(flag=[True, False, None, True] * 50)
    flags.to_csv(tmp_path / "f.csv", index=False)
    data = datamodule(tmp_path, path="f.csv", drop=[])
    data.setup("fit")
    assert "flag" in data.preprocessing.categorical
    labelled = synthetic_table(120)
    train, test = labelled[:100], labelled[100:].copy()
    test.loc[110, "big"] = "maybe"
    splits = write_splits(tmp_path, train, labelled[:10], test)
    with pytest.raises(UserError, match=r"test.csv: data row 11 has big='maybe', a class the training rows do not"):
        datamodule(tmp_path, **splits, target="big", drop=["y", "id"]).setup("fit")
    synthetic_table(12).to_csv(tmp_path / "small.csv", index=False)
    with pytest.raises(UserError, match=r"1 row\(s\) for the validate split, and each split needs at least 2"):
        datamodule(tmp_path, path="small.csv").setup("fit")


def test_a_wrong_data_key_is_named_before_the_table_is_read(tmp_path):
    synthetic_table(50).to_csv(tmp_path / "t.csv", index=False)
    cfg = compose_config(["data=table", f"paths.data_dir={tmp_path}", "data.path=t.csv", "data.target=y",
                          "data.test_fraction=abc"], output_dir=str(tmp_path))
    with pytest.raises(UserError, match=r"'data.test_fraction' is 'abc' \(str\) but datamodules.table.TableDataModule"):
        settle_task(cfg)


def test_export_inputs_come_from_the_fitted_preprocessing_alone(tmp_path):
    synthetic_table(100).to_csv(tmp_path / "t.csv", index=False)
    data = datamodule(tmp_path, path="t.csv", drop=["big", "id"])
    data.setup("fit")
    restored = datamodule(tmp_path, path="moved_away.csv")
    restored.load_state_dict(data.state_dict())
    numeric, categorical = restored.example_inputs(8)
    assert numeric.shape == (8, data.preprocessing.input_width)
    assert categorical.shape == (8, len(data.preprocessing.categorical))
    assert (categorical < torch.tensor(data.preprocessing.cardinalities)).all()


def test_category_names_do_not_depend_on_the_other_values_of_a_file(tmp_path):
    table = synthetic_table(200).drop(columns=["big", "id"]).assign(rooms=[1.0, 2.0, None, 3.0] * 50)
    table.to_csv(tmp_path / "t.csv", index=False)
    data = datamodule(tmp_path, path="t.csv", drop=[])
    data.setup("fit")
    assert data.preprocessing.categorical["rooms"] == ["1", "2", "3"]
    new = table.head(3).assign(rooms=[2.0, 2.5, 3.0])  # one value that is not whole: the others are still known
    _, categorical, _ = data.encode(new, "new.csv", with_target=False)
    codes = categorical[:, list(data.preprocessing.categorical).index("rooms")].tolist()
    assert codes[0] == 2 and codes[1] == 0 and codes[2] == 3
    refit = Preprocessing.from_state(json.loads(json.dumps(data.state_dict())))
    refit.numeric["x1"]["mean"] *= 1 + 1e-12  # another machine's rounding: the same fit
    assert refit.matches(data.preprocessing)
    refit.numeric["x1"]["mean"] += 0.1
    assert not refit.matches(data.preprocessing)


def test_given_splits_are_checked_for_their_columns(tmp_path):
    table = synthetic_table(100)
    splits = write_splits(tmp_path, table[:60], table[60:80].drop(columns=["y"]), table[80:])
    with pytest.raises(UserError, match=r"val.csv: no column 'y'"):
        datamodule(tmp_path, **splits).setup("fit")
