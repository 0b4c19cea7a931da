"""Where the project's own files are: the checkout (or installed tree) that holds run.py and conf/."""
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = PROJECT_ROOT / "conf"
RUN_SCRIPT = PROJECT_ROOT / "run.py"  # not sys.argv[0]: joblib workers and DDP ranks start jobs too
