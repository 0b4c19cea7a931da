"""What TensorBoard shows of a run: scalars by stage, and an HPARAMS session holding the settings and final results,
read back with TensorBoard's own reader and served by a real TensorBoard server."""
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
    base, classifier = events.Scalars("lr-Adam/pg1"), events.Scalars("lr-Adam/pg2")
    assert base[0].value == pytest.approx(0.003) and len(base) == len(classifier) == 3
    assert [c.value for c in classifier] == pytest.approx([10 * b.value for b in base])
    assert base[-1].value < base[0].value  # cosine
    assert {"val/confusion_matrix", "test/confusion_matrix"} <= set(events.Tags()["images"])  # on by default
    # Epoch time and throughput: 192 training images an epoch (256 less 64 for validation).
    for seconds, speed in zip(events.Scalars("train/epoch_seconds"), events.Scalars("train/samples_per_second")):
        assert seconds.value > 0 and seconds.value * speed.value == pytest.approx(192, rel=1e-3)
    assert [event.step for event in events.Scalars("val/acc")] == sorted(e.step for e in events.Scalars("val/acc"))
    assert len(events.Scalars("val/acc")) == 3  # one point per epoch


def test_hparams_session_holds_the_settings_and_the_final_results(finished_run):
    _, events, metrics = finished_run
    content = events.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    settings = start.session_start_info.hparams
    assert settings["optimizer.lr"].number_value == pytest.approx(0.003)
    assert settings["model"].string_value == "mlp" and settings["model.hidden_dims"].string_value == "[32]"
    assert settings["trainer.max_epochs"].number_value == 3
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    registered = {info.name.tag for info in experiment.metric_infos}
    assert {"hparams/best_val/acc", "hparams/test/acc", "hparams/test/loss"} <= registered
    for name in ("best_val/acc", "test/acc", "test/loss"):  # the values the HPARAMS table shows
        assert events.Scalars(f"hparams/{name}")[-1].value == pytest.approx(metrics[name])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_tensorboard_server_serves_the_run_and_its_val_acc_series(finished_run):
    run_dir, events, _ = finished_run
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(run_dir.parent.parent),
                               "--host", "127.0.0.1", "--port", str(port), "--reload_interval", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline, runs = time.monotonic() + 90, []
        while "mnist_mlp/shown" not in runs:
            assert server.poll() is None and time.monotonic() < deadline, server.stderr.read()[-2000:]
            time.sleep(0.5)
            try:
                runs = json.load(urllib.request.urlopen(f"{base}/data/runs", timeout=5))
            except OSError:
                continue
        query = urllib.parse.urlencode({"run": "mnist_mlp/shown", "tag": "val/acc"})
        series = json.load(urllib.request.urlopen(f"{base}/data/plugin/scalars/scalars?{query}", timeout=10))
        assert [(step, pytest.approx(value)) for _, step, value in series] == [
            (event.step, pytest.approx(event.value)) for event in events.Scalars("val/acc")]
        images = json.load(urllib.request.urlopen(f"{base}/data/plugin/images/tags", timeout=10))
        assert "val/confusion_matrix" in images["mnist_mlp/shown"]
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_the_resolved_config_is_a_text_entry(finished_run):
    _, events, _ = finished_run
    text = events.Tensors("config/text_summary")[-1].tensor_proto.string_val[0].decode()
    assert text.startswith("```yaml") and "optimizer:" in text and "  lr: 0.003" in text
    assert "${" not in text  # resolved
