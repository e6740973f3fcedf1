"""studentspec: teacher-student specialization in deep ReLU / Leaky ReLU networks, batched over seeds."""

from .config import Config, ConfigError, load_config
from .store import Run, StoreError, load_run, write_run
from .train import TrainResult, build, train

__all__ = ["Config", "ConfigError", "Run", "StoreError", "TrainResult", "build", "load_config", "load_run", "train", "write_run"]
__version__ = "0.1.0"
