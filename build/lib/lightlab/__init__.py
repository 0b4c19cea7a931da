"""lightlab's own glue, in layers (README, Architecture): base <- lightning_internals <- config <- callbacks, sweeps
<- run. Imports go down the layers only (pyproject.toml, [tool.importlinter])."""
from lightlab.base import moved

moved.install()  # saved runs name classes by their paths before the move
