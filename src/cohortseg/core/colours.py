"""The display colour of each label value, shared by figures, Slicer files and DICOM SEG."""

from __future__ import annotations

#: matplotlib's ``tab10`` colours (its "category10" palette), as sRGB hex, without matplotlib so
#: that file-format writers do not import it.
TAB10 = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)


def class_colour(value: int) -> tuple[float, float, float]:
    """Display colour of label value ``value`` (1, 2, …: the ``tab10`` colours in turn), as
    (r, g, b) in 0..1."""
    code = TAB10[(value - 1) % len(TAB10)]
    return tuple(int(code[k : k + 2], 16) / 255 for k in (1, 3, 5))  # type: ignore[return-value]
