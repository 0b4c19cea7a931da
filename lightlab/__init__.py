"""lightlab's own glue, one subpackage per concern; the layers and which may import which: README, Architecture."""
from lightlab.base import moved

moved.install()  # saved runs name classes by their paths before the move
