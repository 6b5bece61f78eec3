"""Data: real sensor spectral responses (:mod:`.srf`) and the embedded reference scenes
(:mod:`.scenes`), the default dataset."""
from .scenes import Scene, describe, load_reference_scenes, reference_wavelengths
from .srf import SENSORS, band_names, srf_matrix

__all__ = ["SENSORS", "band_names", "srf_matrix", "Scene", "reference_wavelengths",
           "load_reference_scenes", "describe"]
