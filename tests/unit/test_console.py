"""What a run and a sweep print: numbers by magnitude, tables that never break a word."""
import io
import re

import pytest
from omegaconf import OmegaConf
from rich.console import Console

from lightlab.base.numbers import format_number
from lightlab.run.record import print_summary
from lightlab.sweeps.summary import print_table


@pytest.mark.parametrize("value, shown", [(1e-3, "0.001"), (3e-5, "3e-05"), (0.0005, "0.0005"), (0.97283, "0.9728"),
                                          (2.0089, "2.009"), (27377.8223, "27378"), (0.0, "0"), (12, "12"),
                                          (float("nan"), "nan"), (1.5e9, "1.5e+09")])
def test_numbers_are_shown_by_magnitude(value, shown):
    assert format_number(value) == shown


def test_the_final_summary_shows_a_small_learning_rate_as_it_is(capsys):
    cfg = OmegaConf.create({"experiment_name": "mnist_mlp", "mode": "train", "paths": {"log_dir": "logs"}})
    print_summary(cfg, {"metrics": {"lr-Adam": 3e-5, "test/acc": 0.97283}, "best_checkpoint": None, "run_dir": "x"})
    shown = capsys.readouterr().out
    assert re.search(r"lr-Adam\s+│\s+3e-05 ", shown) and re.search(r"test/acc\s+│\s+0.9728 ", shown)
    assert "0.0000" not in shown


HEADER = ["job", "optimizer.lr", "model.dropout", "status", "val/acc", "test/acc", "best_epoch", "wall_s", "best",
          "error"]
TABLE = [[0, "0.01", "0.1", "completed", "0.9012", "0.9108", 1, "3.2", "*", ""],
         [1, "0.001", "0.3", "failed", "", "", "", "1.0", "", "ValueError: the learning rate is not a number"]]


def cells(text: str) -> set[str]:
    return {cell.strip() for line in text.splitlines() for cell in re.split(r"[│┃]", line)}


def test_a_sweep_table_on_a_narrow_terminal_drops_columns_and_never_breaks_a_word():
    out = io.StringIO()
    print_table(HEADER, TABLE, "sweep", console=Console(file=out, force_terminal=True, width=60, color_system=None))
    text = out.getvalue()
    assert max(len(line) for line in text.splitlines()) <= 60
    assert {"job", "optimizer.lr", "model.dropout", "status", "val/acc", "completed", "0.9012"} <= cells(text)
    assert "not shown at this width: test/acc, best_epoch, wall_s, best, error" in " ".join(text.split())


def test_a_sweep_table_in_a_log_file_keeps_every_column_whole_however_wide():
    out = io.StringIO()
    print_table(HEADER, TABLE, "sweep", console=Console(file=out, force_terminal=False, width=40))
    assert set(HEADER) | {"completed", "ValueError: the learning rate is not a number"} <= cells(out.getvalue())
