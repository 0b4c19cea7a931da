"""Networks (plain nn.Modules), the task modules that train them, losses and optimization, all built from conf/."""
from lightlab.base import moved

moved.install()  # saved runs name networks and task modules by their paths before the move
