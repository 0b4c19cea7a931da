"""lightlab's own glue, one subpackage per concern; the layers and which may import which: README, Architecture."""
from lightlab.base import moved
from lightlab.lightning_internals.dependency_waits import skip_torchmetrics_matplotlib

moved.install()  # saved runs name classes by their paths before the move
skip_torchmetrics_matplotlib()  # before anything imports Lightning (which imports torchmetrics): 0.4 s a run
