"""segcli: semantic segmentation from the command line (FCN and U-Net on Keras 3)."""

__version__ = "0.1.0"

from segcli.backend import prefer_onednn as _prefer_onednn

_prefer_onednn()  # before anything loads TensorFlow: its oneDNN kernels, off by default on AVX2-only CPUs
