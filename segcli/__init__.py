"""segcli: semantic segmentation from the command line (FCN and U-Net on Keras 3)."""

__version__ = "0.1.0"
