"""README's quick start as a user without our data folder meets it: `python run.py` with no DATA_DIR downloads MNIST
into ./data (md5-checked) and trains; offline, it stops with the message and leaves no run folder."""
import functools
import hashlib
import http.server
import os
import re
import shutil
import subprocess
import sys
import threading

from tests.conftest import ROOT, require_real_data


def quick_start_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.*?)\n```", section, re.S)


def test_the_quick_start_needs_no_data_folder_of_ours():
    train = quick_start_commands()[0]
    assert train.endswith("&& python run.py") and "DATA_DIR" not in train and "shared" not in train


def user_run(cwd, *arguments) -> subprocess.CompletedProcess:
    """`python run.py …` as README's quick start runs it, for a user without DATA_DIR, in a folder of their own."""
    environment = {key: value for key, value in os.environ.items() if key not in ("DATA_DIR", "CACHE_DIR")}
    return subprocess.run([sys.executable, str(ROOT / "run.py"), *arguments, "print_config=false"], cwd=cwd,
                          env=environment, capture_output=True, text=True, timeout=600)


def test_the_default_run_downloads_mnist_into_data_and_trains(tmp_path):
    real = require_real_data("MNIST") / "MNIST" / "raw"
    served = tmp_path / "mirror"
    served.mkdir()
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                 "t10k-labels-idx1-ubyte.gz"):
        shutil.copy(real / name, served / name)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    user = tmp_path / "user"
    user.mkdir()
    try:
        offline = user_run(user, "data.mirrors=[http://127.0.0.1:9/]")  # nothing listens on port 9
        assert offline.returncode == 2 and "MNIST files not found" in offline.stderr
        assert "downloading them failed" in offline.stderr and "DATA_DIR=/path/to/data python run.py" in offline.stderr
        assert not (user / "logs").exists()
        result = user_run(user, f"data.mirrors=[http://127.0.0.1:{server.server_address[1]}/]", "trainer.max_epochs=1",
                          "trainer.limit_train_batches=100")
    finally:
        server.shutdown()
    assert result.returncode == 0, result.stderr[-3000:]
    for path in (user / "data" / "MNIST" / "raw").iterdir():
        assert hashlib.md5(path.read_bytes()).hexdigest() == hashlib.md5((real / path.name).read_bytes()).hexdigest()
    accuracy = float(re.search(r"test/acc\s+│\s+([0-9.]+)", result.stdout).group(1))
    assert accuracy > 0.9, result.stdout[-2000:]
    assert (user / "logs" / "mnist_mlp" / "run_001" / "metrics.json").is_file()
