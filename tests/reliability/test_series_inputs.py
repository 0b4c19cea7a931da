"""Bad series as a user meets them through `python run.py`: exit 2, the file and the fix named, nothing written."""
import pytest

from tests.conftest import run_cli, synthetic_series

SERIES = synthetic_series(400).to_csv(index=False)
LINES = SERIES.splitlines(keepends=True)
CASES = {  # name -> (file content, extra arguments, the message's start)
    "missing time column": (SERIES, ["data.time_column=when"], "error: {file}: no column 'when' (data.time_column)"),
    "unparsable timestamp": ("".join(LINES[:8] + ["2020-13-01 04:00,1.0,0.0\n"] + LINES[9:]), [],
                             "error: {file}: time column 'time' (data.time_column): row 8 (counting data rows from "
                             "1) holds '2020-13-01 04:00'"),
    "gap": ("".join(LINES[:101] + LINES[104:]), [],
            "error: {file}: the series has gaps: 3 missing step(s) of 0 days 00:30:00 and 0 row(s) with a missing "
            "value; the first at 2020-01-03 02:00:00"),
    "too short": (SERIES, ["data.test_size=200", "data.val_size=150"],
                  "error: {file}: the series has 400 steps; the test (200) and validation (150) periods leave 50 "
                  "for training, and one training window needs data.lookback (60) + data.horizon (6) = 66"),
    "missing covariate": (SERIES, ["data.covariates=[temperature]"],
                          "error: {file}: no column 'temperature' (data.covariates)"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_a_bad_series_is_refused_and_leaves_nothing(tmp_path, name):
    content, arguments, message = CASES[name]
    file = tmp_path / "s.csv"
    file.write_text(content)
    result = run_cli("data=time_series", f"data.path={file}", "data.target=y", "data.horizon=6",
                     f"paths.log_dir={tmp_path / 'logs'}", *arguments)
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.startswith(message.format(file=file)), result.stderr[-3000:]
    assert "Traceback" not in result.stderr and not (tmp_path / "logs").exists()
