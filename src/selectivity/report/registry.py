"""The report's sections, in page order: the one list a new section is added to.

Each entry names a builder ``build(ctx) -> list[Section]`` (see :mod:`.section`); a
builder returns ``[]`` when its data is missing (the section is then left out) and
is run guarded by :func:`~.section.build_sections`.
"""

from __future__ import annotations

from .mechanisms import mechanism_sections
from .paper1 import (
    across_sections,
    cca_sections,
    configuration_sections,
    provenance_sections,
    setting_sections,
)
from .robust_training import robust_training_sections
from .robustness import robustness_sections
from .robustness_summaries import summary_sections
from .section import SectionSpec
from .units import gallery_sections

__all__ = ["SECTIONS"]

#: The report's sections in page order (id and heading are used if the builder fails).
SECTIONS: tuple[SectionSpec, ...] = (
    SectionSpec("settings", "Results by setting", setting_sections),
    SectionSpec("across", "Across settings", across_sections),
    SectionSpec("cca", "Representation similarity (CCA, paper Fig. 3)", cca_sections),
    SectionSpec("robustness", "Robustness (paper 2)", robustness_sections),
    SectionSpec("robustness-summaries", "Robustness summaries (paper 2)", summary_sections),
    SectionSpec("robust-training", "Robust training and selectivity", robust_training_sections),
    SectionSpec("mechanisms", "Mechanisms (dimensionality, gradient variability)", mechanism_sections),
    SectionSpec("gallery", "Unit gallery", gallery_sections),
    SectionSpec("configuration", "Configuration", configuration_sections),
    SectionSpec("provenance", "Provenance", provenance_sections),
)
