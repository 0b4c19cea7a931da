"""Two waits that Lightning's dependencies add to every run, for features lightlab does not use; each is removed at
its source. Measured on the 2-core CPU with `python -X importtime` and cProfile (README, Performance).

- Start-up: torchmetrics imports matplotlib.pyplot when matplotlib is installed (~0.4 s), only to annotate and draw
  its own `Metric.plot()`, which lightlab never calls (our figures import matplotlib when they draw). An import
  finder marks matplotlib unavailable *to torchmetrics* just before `torchmetrics.utilities.plot` loads; matplotlib
  itself stays importable. torchmetrics' issue #3457 reports the same cost; when a release imports it lazily, the
  finder has nothing to change (the flag is only read at that module's import).
- Shut-down: Lightning's Rich progress bar runs a refresh thread that sleeps 1 / refresh_rate seconds between
  looks at its stop flag, and every fit's and test's teardown joins it: at lightlab's refresh_rate of 1, up to a
  second per stage (0.8 s of a 5.7 s MNIST run). The thread now waits on the flag itself, so the join is immediate;
  redraws happen exactly as before.
"""
import importlib
import importlib.abc
import sys

ran = {"torchmetrics_without_matplotlib": 0, "prompt_refresh_threads": 0}  # tests: each path really ran


class _TorchmetricsWithoutMatplotlib(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname == "torchmetrics.utilities.plot":
            sys.meta_path.remove(self)  # once: later imports go the normal way
            flag = importlib.import_module("torchmetrics.utilities.imports")._MATPLOTLIB_AVAILABLE
            flag.available = False  # a RequirementCache: read once, by the module about to load
            flag.message = "matplotlib is left out of torchmetrics' import by lightlab (start-up time)"
            ran["torchmetrics_without_matplotlib"] += 1
        return None  # the normal finders load the module


def skip_torchmetrics_matplotlib() -> None:
    """Before torchmetrics is imported (lightlab's package import calls it); afterwards it changes nothing."""
    if "torchmetrics" not in sys.modules and not any(isinstance(finder, _TorchmetricsWithoutMatplotlib)
                                                     for finder in sys.meta_path):
        sys.meta_path.insert(0, _TorchmetricsWithoutMatplotlib())


def _run_refresh_thread(self) -> None:
    """Lightning's loop, with `done.wait` in place of `time.sleep`: stop() wakes it at once."""
    ran["prompt_refresh_threads"] += 1
    while not self.done.is_set():
        if self.refresh_cond:
            with self.live._lock:
                self.live.refresh()
            self.refresh_cond = False
        self.done.wait(1 / self.refresh_per_second)


def prompt_progress_stop() -> None:
    """Lightning's Rich refresh thread stops as soon as it is told to (lightlab's progress bar calls this)."""
    from pytorch_lightning.callbacks.progress import rich_progress

    rich_progress._RefreshThread.run = _run_refresh_thread
