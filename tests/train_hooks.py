"""Training callbacks for tests that run ``python -m zoomin train`` in a subprocess: the command
installs them with ``--callback train_hooks:NAME``, the subprocess finds this folder through
``hook_env`` (PYTHONPATH), and each callback reads its setting from the environment."""
import os
import time
from pathlib import Path

from zoomin.checkpoint import atomic_save

PAUSE_AT_STEP = "ZOOMIN_TEST_PAUSE_AT_STEP"  # PauseAtStep: the optimiser step to stop still after
DUMP_PARAMS = "ZOOMIN_TEST_DUMP_PARAMS"  # DumpParams: the folder every rank saves its parameters in


def hook_env(settings: dict[str, str]) -> dict[str, str]:
    """Environment additions for a subprocess using these callbacks: this folder on PYTHONPATH,
    and ``settings`` (e.g. ``{PAUSE_AT_STEP: "6"}``)."""
    path = os.pathsep.join(p for p in (str(Path(__file__).resolve().parent), os.environ.get("PYTHONPATH")) if p)
    return {"PYTHONPATH": path, **settings}


class PauseAtStep:
    """After optimiser step ``$ZOOMIN_TEST_PAUSE_AT_STEP``, write ``OUT/paused`` and wait, so a
    test can SIGKILL the process at a known point mid-epoch."""

    def __init__(self):
        self.step = int(os.environ[PAUSE_AT_STEP])

    def on_step(self, trainer) -> None:
        if trainer.step == self.step:
            (trainer.out / "paused").write_text(str(trainer.step))
            while True:
                time.sleep(1)


class DumpParams:
    """When training ends, every rank saves its parameters as ``$ZOOMIN_TEST_DUMP_PARAMS/params.rankR.pt``,
    to compare ranks."""

    def __init__(self):
        self.folder = Path(os.environ[DUMP_PARAMS])

    def on_fit_end(self, trainer) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_save({k: v.detach().cpu() for k, v in trainer.model.state_dict().items()},
                    self.folder / f"params.rank{trainer.rank}.pt")
