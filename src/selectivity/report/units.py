"""The unit gallery section: for chosen layers of one run, the most and least selective units
with their most-activating test images and the images' classes."""

from __future__ import annotations

from collections.abc import Callable

from matplotlib.axes import Axes

from ..plots.units import draw_unit_gallery
from .section import ReportContext, Section, figure_item

__all__ = ["gallery_sections"]


def gallery_sections(ctx: ReportContext) -> list[Section]:
    """One figure per chosen layer; ``[]`` when the report was not asked for a gallery."""
    if ctx.gallery is None:
        return []
    figures = []
    for layer, d in ctx.gallery.items():
        k = d["images"].shape[1]
        figures.append(
            figure_item(
                ctx,
                "gallery-" + "".join(c if c.isalnum() else "-" for c in layer),
                "Units",
                f"{layer}: most and least selective units",
                f"Each row: one unit of {layer} with its {k} most-activating test images (largest "
                "response first) and their classes; the row label gives its selectivity index and "
                "preferred class (largest class mean).",
                _drawer(d, layer),
                wide=True,
            )
        )
    caption = (
        f"Run {ctx.gallery_run} (best checkpoint), measured on its test images. Dead units are "
        "never shown; units are ranked by the class selectivity index."
    )
    return [Section(id="gallery", heading="Unit gallery", caption=caption, figures=figures)]


def _drawer(d: dict, layer: str) -> Callable[[], Axes]:
    return lambda: draw_unit_gallery(d["images"], d["row_labels"], d["tile_labels"], title=layer)
