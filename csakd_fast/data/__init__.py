"""Data: Wald's-protocol degradation, readers/writers of hyperspectral cubes, the training Dataset,
real sensor spectral responses and the embedded reference scenes (the default dataset).

Modules: ``degrade`` (PSF, decimation, SRF, noise, ``simulate_pair``), ``normalization`` (the
paper's per-cube min-max scaling and its inverse), ``readers`` (``read_cube``/``write_cube``),
``dataset`` (``FusionDataset``), ``srf`` (sensor responses), ``scenes`` (reference scenes)."""
from . import dataset, degrade, normalization, readers  # noqa: F401  (the modules, by name)
from .dataset import FusionDataset
from .degrade import (Degraded, add_noise, apply_srf, blur, decimate, fwhm_sigma, gaussian_psf,
                      psf_kernel2d, resolve_srf, simulate_pair, spatial_degrade)
from .normalization import denormalize, normalize, to_signed, to_unit
from .readers import CAVE_WAVELENGTHS, Cube, read_cube, write_cube
from .scenes import Scene, describe, load_reference_scenes, reference_wavelengths
from .srf import SENSORS, band_names, srf_matrix

__all__ = [
    "FusionDataset", "Degraded", "add_noise", "apply_srf", "blur", "decimate", "simulate_pair",
    "fwhm_sigma", "gaussian_psf", "psf_kernel2d", "resolve_srf", "spatial_degrade",
    "denormalize", "normalize", "to_signed", "to_unit", "CAVE_WAVELENGTHS", "Cube", "read_cube",
    "write_cube", "SENSORS", "band_names", "srf_matrix", "Scene", "reference_wavelengths",
    "load_reference_scenes", "describe",
]
