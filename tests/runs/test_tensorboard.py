"""What TensorBoard shows of a run: scalars by stage, and an HPARAMS session holding the settings and final results,
read back with TensorBoard's own reader and served by a real TensorBoard server."""
import contextlib
import json
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from tests.conftest import quick_overrides, run_cli, write_tiny_mnist


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("tensorboard")
    data = write_tiny_mnist(root / "data")
    result = run_cli(*quick_overrides(data, root / "logs"), "optimizer.lr=0.003", "trainer.max_epochs=3",
                     "run_name=shown", "+parameter_groups.lr_multipliers={net.classifier: 10}")  # 2 parameter groups
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = root / "logs" / "mnist_mlp" / "shown"
    events = EventAccumulator(str(run_dir))
    events.Reload()
    return run_dir, events, json.loads((run_dir / "metrics.json").read_text())["metrics"]


def test_scalars_are_grouped_by_stage(finished_run):
    _, events, _ = finished_run
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/acc", "val/loss", "val/acc", "test/loss", "test/acc"} <= tags
    assert "hp_metric" not in tags  # Lightning's placeholder
    # The learning rate of each parameter group: the classifier's at 10x the rest, both following the schedule.
    base, classifier = events.Scalars("train/lr-Adam/pg1"), events.Scalars("train/lr-Adam/pg2")
    assert base[0].value == pytest.approx(0.003) and len(base) == len(classifier) == 3
    assert [c.value for c in classifier] == pytest.approx([10 * b.value for b in base])
    assert base[-1].value < base[0].value  # cosine
    assert {"val/confusion_matrix", "test/confusion_matrix"} <= set(events.Tags()["images"])  # on by default
    # Epoch time and throughput: 192 training images an epoch (256 less 64 for validation).
    for seconds, speed in zip(events.Scalars("train/epoch_seconds"), events.Scalars("train/samples_per_second")):
        assert seconds.value > 0 and seconds.value * speed.value == pytest.approx(192, rel=1e-3)
    assert [event.step for event in events.Scalars("val/acc")] == sorted(e.step for e in events.Scalars("val/acc"))
    assert len(events.Scalars("val/acc")) == 3  # one point per epoch


def test_hparams_session_holds_what_the_command_set_then_the_core_settings(finished_run):
    _, events, metrics = finished_run
    content = events.PluginTagToContent("hparams")
    assert "_hparams_/experiment" not in content  # TensorBoard builds the table from the runs (differing keys first)
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    settings = start.session_start_info.hparams
    assert settings["optimizer.lr"].number_value == pytest.approx(0.003)
    assert settings["model"].string_value == "mlp" and settings["model.hidden_dims"].string_value == "[32]"
    assert settings["trainer.max_epochs"].number_value == 3 and settings["seed"].number_value == 0
    assert settings["data.download"].string_value == "false"  # a boolean as a word, not 0.0000
    assert settings["parameter_groups.lr_multipliers"].string_value == "{'net.classifier': 10}"
    assert {"data", "optimizer", "data.batch_size"} <= set(settings)
    assert not {"paths.data_dir", "callbacks", "channels_last", "compile", "model.activation"} & set(settings)
    # The results HPARAMS shows are the runs' own scalars: no hparams/* copies, the best monitored value beside val/.
    tags = events.Tags()["scalars"]
    assert events.Scalars("val/acc_best")[-1].value == pytest.approx(metrics["best_val/acc"])
    assert events.Scalars("test/acc")[-1].value == pytest.approx(metrics["test/acc"])
    assert [tag for tag in tags if tag.startswith("hparams/")] == [] and "epoch" not in tags
    assert [event.value for event in events.Scalars("train/epoch")][:2] == [0, 0]  # Lightning's epoch, filed in train/


@contextlib.contextmanager
def tensorboard_server(log_dir, run: str):
    """A real TensorBoard server on `log_dir`, once it lists `run`; yields a function reading its JSON routes."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(log_dir),
                               "--host", "127.0.0.1", "--port", str(port), "--reload_interval", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def get(route: str):
        return json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}{route}", timeout=10))

    try:
        deadline, runs = time.monotonic() + 90, []
        while run not in runs:
            assert server.poll() is None and time.monotonic() < deadline, server.stderr.read()[-2000:]
            time.sleep(0.5)
            try:
                runs = get("/data/runs")
            except OSError:
                continue
        yield get
    finally:
        server.terminate()
        server.wait(timeout=30)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_tensorboard_server_serves_the_run_and_its_val_acc_series(finished_run):
    run_dir, events, _ = finished_run
    with tensorboard_server(run_dir.parent.parent, "mnist_mlp/shown") as get:
        query = urllib.parse.urlencode({"run": "mnist_mlp/shown", "tag": "val/acc"})
        series = get(f"/data/plugin/scalars/scalars?{query}")
        assert [(step, pytest.approx(value)) for _, step, value in series] == [
            (event.step, pytest.approx(event.value)) for event in events.Scalars("val/acc")]
        images = get("/data/plugin/images/tags")
        assert "val/confusion_matrix" in images["mnist_mlp/shown"]


def test_a_sweep_in_hparams_shows_the_swept_key_first_and_scalars_open_with_the_stages(tmp_path):
    data = write_tiny_mnist(tmp_path / "data")
    result = run_cli("-m", *quick_overrides(data, tmp_path / "logs"), "optimizer.lr=0.01,0.003,0.001",
                     "trainer.max_epochs=1", "sweep_name=grid", "print_config=false", "compile=false")
    assert result.returncode == 0, result.stderr[-3000:]
    with tensorboard_server(tmp_path / "logs", "mnist_mlp/grid/2") as get:
        # What the HPARAMS tab asks for (GET with the request in `request`, as TensorBoard's plugin accepts it)
        experiment = get("/data/plugin/hparams/experiment?" + urllib.parse.urlencode({"request": "{}"}))
        columns = [info["name"] for info in experiment["hparamInfos"]]
        print("HPARAMS columns:", columns)
        assert columns[0] == "optimizer.lr" and experiment["hparamInfos"][0]["differs"]
        assert {"model", "data", "optimizer", "data.batch_size", "trainer.max_epochs", "seed"} <= set(columns)
        assert len(columns) <= 15 and "channels_last" not in columns
        compile_column = next(info for info in experiment["hparamInfos"] if info["name"] == "compile")
        assert compile_column["type"] == "DATA_TYPE_STRING" and compile_column["domainDiscrete"] == ["false"]
        metrics = {info["name"]["tag"] for info in experiment["metricInfos"]}
        assert {"test/acc", "val/acc_best", "val/acc"} <= metrics
        scalars = sorted(get("/data/plugin/scalars/tags")["mnist_mlp/grid/0"])
        print("SCALARS tags of job 0:", scalars)
        groups = list(dict.fromkeys(tag.split("/")[0] for tag in scalars))
        assert groups == ["test", "train", "val"]  # no epoch, hparams or lr-Adam groups above them


def test_the_resolved_config_is_a_text_entry(finished_run):
    _, events, _ = finished_run
    text = events.Tensors("config/text_summary")[-1].tensor_proto.string_val[0].decode()
    assert text.startswith("```yaml") and "optimizer:" in text and "  lr: 0.003" in text
    assert "${" not in text  # resolved
