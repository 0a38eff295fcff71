"""Resolution units: the one vocabulary for how fine a picture of the tissue is (TIAToolbox-style).

* ``mpp``: microns per pixel — the physical unit every slide setting is stated in;
* ``power``: objective magnification, an accepted alias (``mpp = 10 / power``: 40x = 0.25 µm/px,
  20x = 0.5, 10x = 1.0, the convention scanners write into slide metadata);
* ``baseline``: a scale relative to level 0 of the image (``zoomin.geometry.view_size``'s ``s``) —
  for arrays and for slides whose pixel size is unknown;
* ``px``: a view's longer side in pixels (stage I only: its scale then depends on the image's size).

A model configured in ``mpp`` reads every slide as if its level 0 were at ``model.mpp`` µm/px
(``SlideSource`` resamples from the nearest pyramid level), so a model trained on small slides sees
tissue at the same physical resolution on slides of any size.
"""
from __future__ import annotations

from enum import Enum

POWER_MPP = 10.0  # mpp x power: 10x objective = 1 µm/px


class Units(str, Enum):
    MPP = "mpp"
    POWER = "power"
    BASELINE = "baseline"
    PX = "px"


PHYSICAL = (Units.MPP, Units.POWER)  # the units with a physical size (``to_mpp`` takes them)


def to_mpp(value: float, units: Units | str = Units.MPP) -> float:
    """A resolution in ``mpp`` or ``power`` -> microns per pixel."""
    units = Units(units)
    if value <= 0:
        raise ValueError(f"a resolution must be > 0, got {value} {units.value}")
    if units is Units.MPP:
        return float(value)
    if units is Units.POWER:
        return POWER_MPP / float(value)
    raise ValueError(f"{units.value} has no physical size: it is relative to the image")


def relative_scale(mpp: float, target_mpp: float) -> float:
    """The ``baseline`` scale that takes pixels of ``mpp`` µm to pixels of ``target_mpp`` µm (<= 1
    is a coarser view): ``s = mpp / target_mpp``."""
    if mpp <= 0 or target_mpp <= 0:
        raise ValueError(f"pixel sizes must be > 0, got {mpp} and {target_mpp} µm/px")
    return mpp / target_mpp
