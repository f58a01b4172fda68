"""ppp_dist: PatchPerPix instance segmentation for volumes larger than one machine."""

__version__ = "0.1.0"

__all__ = ["__version__"]
