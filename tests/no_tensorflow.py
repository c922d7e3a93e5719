"""Run Python as if TensorFlow were not installed: `python tests/no_tensorflow.py SCRIPT.py|-c CODE [ARGS]`.

TensorFlow is hidden from the import system (find_spec finds nothing, as in an environment without it), so any
`import tensorflow` raises ModuleNotFoundError. A `sys.modules["tensorflow"] = None` entry would not do: Keras
checks `"tensorflow" in sys.modules` and then imports it.
"""

import importlib.machinery
import runpy
import sys


class _HideTensorFlow(importlib.machinery.PathFinder):
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "tensorboard", "tf_keras"):
            return None
        return super().find_spec(name, path, target)


sys.meta_path[:] = [_HideTensorFlow if f is importlib.machinery.PathFinder else f for f in sys.meta_path]

if __name__ == "__main__":
    if sys.argv[1] == "-c":
        code, sys.argv = sys.argv[2], ["-c", *sys.argv[3:]]
        exec(compile(code, "<no_tensorflow -c>", "exec"), {"__name__": "__main__"})
    else:
        sys.argv = sys.argv[1:]
        runpy.run_path(sys.argv[0], run_name="__main__")
