"""Bad tables as a user meets them through `python run.py`: exit 2, the file and the fix named, nothing written."""
import pytest

from tests.conftest import run_cli, synthetic_table

TABLE = "a,b,y\n" + "".join(f"{i},{'red' if i % 2 else 'blue'},{i * 1.5}\n" for i in range(40))
CASES = {  # name -> (file content, extra arguments, the message's start)
    "missing target": (TABLE, ["data.target=price"], "error: {file}: no column 'price'"),
    "non-numeric value": (TABLE.replace("\n7,red", "\n7x,red"), [],
                          "error: {file}: column 'a' holds numbers, but row 8"),
    "empty file": ("", [], "error: data.path: {file} is empty"),
    "header only": ("a,b,y\n", [], "error: data.path: {file} has a header (a, b, y) but no rows"),
    "one class": (TABLE.replace(",red,", ",blue,"), ["data.target=b", "data.drop=[y]"],
                  "error: {file}: the target 'b' has one class"),
    "missing targets": (TABLE.replace(",4.5\n", ",\n").replace(",9.0\n", ",\n"), [],
                        "error: {file}: 2 row(s) have no 'y' (data rows 4, 7)"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_a_bad_table_is_refused_and_leaves_nothing(tmp_path, name):
    content, arguments, message = CASES[name]
    file = tmp_path / "t.csv"
    file.write_text(content)
    result = run_cli("data=table", f"data.path={file}", "data.target=y", f"paths.log_dir={tmp_path / 'logs'}",
                     *arguments)
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.startswith(message.format(file=file)), result.stderr[-3000:]
    assert "Traceback" not in result.stderr and not (tmp_path / "logs").exists()


def test_predict_without_a_training_column_is_refused_and_writes_no_predictions(tmp_path):
    synthetic_table(300).drop(columns=["big"]).to_csv(tmp_path / "t.csv", index=False)
    trained = run_cli("data=table", f"data.path={tmp_path / 't.csv'}", "data.target=y", "data.drop=[id]",
                      f"paths.log_dir={tmp_path / 'logs'}", "trainer.max_epochs=1", "logger=none")
    assert trained.returncode == 0, trained.stderr[-3000:]
    run = next((tmp_path / "logs" / "table_tabular_mlp").glob("run_*"))
    synthetic_table(5).drop(columns=["x2"]).to_csv(tmp_path / "new.csv", index=False)
    result = run_cli("mode=predict", f"ckpt_path={next((run / 'checkpoints').glob('epoch*.ckpt'))}",
                     f"data.predict_path={tmp_path / 'new.csv'}")
    assert result.returncode == 2, result.stderr[-3000:]
    assert f"{tmp_path / 'new.csv'}: no column 'x2', which the model was trained on" in result.stderr
    assert not list(run.glob("predict_*"))
