"""Training: recipes to run folders through model.fit, with the metrics and callbacks segmentation needs.

`train` (run.py) trains one model into a run folder; `compile_for_training` (compile.py) is the one way a
model is compiled for training. The final evaluation of a run is segcli.runs' (training never imports
segcli.evaluation)."""

from segcli.runfolder import read_history
from segcli.training.compile import compile_for_training
from segcli.training.run import TrainingInterrupted, TrainResult, train

__all__ = ["train", "TrainResult", "TrainingInterrupted", "read_history", "compile_for_training"]
