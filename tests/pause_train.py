"""Run `segcli train ARGS...` and stop it at a chosen point, so a test can signal or kill it there: no race
with the training's speed. At the point the process writes its pid to MARKER and waits (a SIGINT ends the
wait as Ctrl-C would end that step: during fit segcli raises KeyboardInterrupt at the batch's end, elsewhere
Python raises it in the wait; SIGKILL ends it on the spot). Paused PAUSE_LIMIT seconds with no signal, it
exits 3 (its test is gone).

usage: python tests/pause_train.py POINT MARKER ARGS...
POINT:
  epoch:E       as epoch E (0-based) begins, before its first step (for SIGKILL: a SIGINT would end that step)
  batch:E       after the first training step of epoch E (0-based): mid-epoch
  backup:E      while epoch E's backup is written: its weights file half-written under the temporary name
                (for SIGKILL only: a SIGINT there would let the truncated file be renamed into place)
  after-fit     fit has returned after the last epoch; no final file written yet
  final-save    model.keras written under its temporary name, not yet renamed into place
"""

import os
import signal
import sys
import time
from pathlib import Path


PAUSE_LIMIT = 900  # seconds a paused training waits for its signal: then it ends itself (its test is gone)


def pause(marker: str) -> None:
    Path(marker).write_text(str(os.getpid()))
    # inside fit, segcli's CtrlC callback holds SIGINT: it sets a flag that the batch's end turns into
    # KeyboardInterrupt, so the paused step then ends as a real one would; elsewhere SIGINT raises in the sleep
    owner = getattr(signal.getsignal(signal.SIGINT), "__self__", None)
    deadline = time.monotonic() + PAUSE_LIMIT
    while not getattr(owner, "pressed", 0):
        if time.monotonic() > deadline:
            print(f"pause_train: no signal came within {PAUSE_LIMIT} s of pausing at {marker}; exiting", flush=True)
            os._exit(3)
        time.sleep(0.05)


def install(point: str, marker: str) -> None:
    import keras

    import segcli.training.run as run
    from segcli.files import TMP_TAG
    from segcli.training import callbacks

    kind, _, arg = point.partition(":")
    if kind in ("epoch", "batch"):
        begin = callbacks.Throughput.on_epoch_begin

        def on_epoch_begin(self, epoch, logs=None):
            begin(self, epoch, logs)
            self.pause_here = epoch == int(arg)
            if self.pause_here and kind == "epoch":
                pause(marker)

        def on_train_batch_end(self, batch, logs=None):
            if self.pause_here and kind == "batch":
                pause(marker)

        callbacks.Throughput.on_epoch_begin = on_epoch_begin
        callbacks.Throughput.on_train_batch_end = on_train_batch_end
    elif kind == "backup":
        save_weights = keras.Model.save_weights

        def truncated_save_weights(self, filepath, *args, **kwargs):
            save_weights(self, filepath, *args, **kwargs)
            if f"epoch-{int(arg) + 1:04d}" in str(filepath) and TMP_TAG in str(filepath):
                with open(filepath, "r+b") as f:
                    f.truncate(96)  # what a kill mid-write leaves
                pause(marker)

        keras.Model.save_weights = truncated_save_weights
    elif kind == "after-fit":
        save_model = run.save_model

        def paused_save_model(model, path, *args, **kwargs):
            if Path(path).name == "model.keras":
                pause(marker)
            return save_model(model, path, *args, **kwargs)

        run.save_model = paused_save_model
    elif kind == "final-save":
        save = keras.Model.save

        def paused_save(self, filepath, *args, **kwargs):
            save(self, filepath, *args, **kwargs)
            if Path(filepath).name.startswith(f".model.keras{TMP_TAG}"):
                pause(marker)

        keras.Model.save = paused_save
    else:
        raise SystemExit(f"unknown point {point}")


if __name__ == "__main__":
    point, marker, *args = sys.argv[1:]
    install(point, marker)
    from segcli.cli import main

    sys.argv = ["segcli", "train", *args]
    main()
