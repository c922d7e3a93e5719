"""Training: recipes to run folders through model.fit, with the metrics and callbacks segmentation needs."""

from segcli.training.run import TrainingInterrupted, TrainResult, read_history, train

__all__ = ["train", "TrainResult", "TrainingInterrupted", "read_history"]
