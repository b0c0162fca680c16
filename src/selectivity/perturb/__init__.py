"""Pure transforms of input batches: the 15 common corruptions (CIFAR-10-C, Tiny ImageNet-C).

Everything here takes and returns float tensors and imports only torch, numpy, scipy,
Pillow and other ``selectivity.perturb`` modules.
"""

from .corruptions import (
    CORRUPTIONS,
    PARAMETER_SETS,
    corrupt,
    corruption_params,
    disk_kernel,
    frost_texture,
    motion_blur_lines,
    plasma_fractal,
    to_uint8,
)

__all__ = [
    "CORRUPTIONS",
    "PARAMETER_SETS",
    "corrupt",
    "corruption_params",
    "disk_kernel",
    "frost_texture",
    "motion_blur_lines",
    "plasma_fractal",
    "to_uint8",
]
