"""The camera a point cloud is lifted with: given intrinsics, else the photo's EXIF focal length, else 60°.

One rule for ``clip2depth predict`` and the web app::

    spec = CameraSpec(fov_deg=70)                   # or CameraSpec(): the photo's EXIF, else 60°
    camera = image_camera("photo.jpg", 4032, 3024, spec)
    camera.intrinsics, camera.source                # Intrinsics(fx=..., ...), "given horizontal field of view 70°"
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from typing import Any

from clip2depth.errors import ConfigError
from clip2depth.inference.pointcloud import DEFAULT_FOV_DEG, Intrinsics
from clip2depth.io.images import exif_focal_35mm, focal_pixels_from_35mm

CAMERA_CONVENTION = "pinhole, pixels; x right, y down, z forward (metres); pixel centres at integer coordinates"
"""Written next to each point cloud with the intrinsics it was lifted with."""


@dataclass(frozen=True)
class ImageCamera:
    """The intrinsics used for one ``width``×``height`` image, and a phrase saying where they came from."""

    intrinsics: Intrinsics
    width: int
    height: int
    source: str
    from_exif: bool

    @property
    def fov_deg(self) -> float:
        """Horizontal field of view in degrees: ``2 · atan(W / (2 · fx))``."""
        return math.degrees(2.0 * math.atan(self.width / (2.0 * self.intrinsics.fx)))

    def to_json(self) -> dict[str, Any]:
        """``{"width", "height", "fx", "fy", "cx", "cy", "source", "convention"}``: the ``_camera.json`` file."""
        return {"width": self.width, "height": self.height, **asdict(self.intrinsics), "source": self.source,
                "convention": CAMERA_CONVENTION}  # fmt: skip


@dataclass(frozen=True)
class CameraSpec:
    """What is known about the camera, in pixels of the image as displayed (after EXIF rotation).

    Resolved for each image size by :meth:`resolve`:

    - ``fx`` and/or ``fy``: a missing one equals the other (square pixels);
    - ``fov_deg``: that horizontal field of view, square pixels;
    - no focal length given: the image's EXIF 35 mm equivalent focal length when it has one
      (:func:`~clip2depth.io.images.focal_pixels_from_35mm`), else a ``default_fov_deg`` horizontal
      field of view (60°, :data:`~clip2depth.inference.pointcloud.DEFAULT_FOV_DEG`);
    - ``cx``, ``cy``: default to the image centre ``((W - 1) / 2, (H - 1) / 2)`` in every case.

    Raises:
        ConfigError: ``fov_deg`` together with ``fx``/``fy``, a focal length ≤ 0, a FOV outside (0, 180),
            a non-finite principal point; the message names the field (``fov_deg=200``).
    """

    fx: float | None = None
    fy: float | None = None
    cx: float | None = None
    cy: float | None = None
    fov_deg: float | None = None
    default_fov_deg: float = DEFAULT_FOV_DEG

    def __post_init__(self) -> None:
        for name in ("fx", "fy"):
            value = getattr(self, name)
            if self.fov_deg is not None and value is not None:
                raise ConfigError(f"fov_deg={self.fov_deg:g} and {name}={value:g} both set the focal length; "
                                  "give one of them", params=("fov_deg", name))  # fmt: skip
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{name}={value:g} is not a focal length: give a positive number of pixels",
                                  params=(name,))  # fmt: skip
        for name in ("fov_deg", "default_fov_deg"):
            value = getattr(self, name)
            if value is not None and not 0.0 < value < 180.0:
                raise ConfigError(f"{name}={value:g} is not a field of view: give degrees between 0 and 180 "
                                  "(exclusive)", params=(name,))  # fmt: skip
        for name in ("cx", "cy"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ConfigError(f"{name}={value} is not a pixel coordinate: give a finite number", params=(name,))

    @property
    def focal_unknown(self) -> bool:
        """Whether no focal length was given (neither ``fx``/``fy`` nor ``fov_deg``): EXIF or the default applies."""
        return self.fx is None and self.fy is None and self.fov_deg is None

    def intrinsics(self, width: int, height: int, focal_35mm: float | None = None) -> Intrinsics:
        """Pinhole intrinsics for a ``width``×``height`` image (see the class docstring for the rules)."""
        return self.resolve(width, height, focal_35mm).intrinsics

    def resolve(self, width: int, height: int, focal_35mm: float | None = None) -> ImageCamera:
        """The intrinsics for a ``width``×``height`` image and where its focal length came from.

        ``focal_35mm`` (the image's EXIF 35 mm equivalent focal length, mm) applies only when no focal
        length was given.
        """
        from_exif = False
        if self.fx is not None or self.fy is not None:  # square pixels: a missing one equals the given one
            fx = self.fx if self.fx is not None else self.fy
            fy = self.fy if self.fy is not None else self.fx
            source = "given focal length fx/fy"
        elif self.fov_deg is not None:
            fx = fy = Intrinsics.from_fov(self.fov_deg, width, height).fx
            source = f"given horizontal field of view {self.fov_deg:g}°"
        elif focal_35mm is not None:
            fx = fy = focal_pixels_from_35mm(focal_35mm, width, height)
            source = f"EXIF 35 mm equivalent focal length {focal_35mm:g} mm"
            from_exif = True
        else:
            fx = fy = Intrinsics.from_fov(self.default_fov_deg, width, height).fx
            source = f"default {self.default_fov_deg:g} degree horizontal field of view (camera unknown)"
        intrinsics = Intrinsics(fx=fx, fy=fy, cx=(width - 1) / 2.0 if self.cx is None else self.cx,
                                cy=(height - 1) / 2.0 if self.cy is None else self.cy)  # fmt: skip
        return ImageCamera(intrinsics, width, height, source, from_exif)


def image_camera(path: str | os.PathLike[str], width: int, height: int, spec: CameraSpec) -> ImageCamera:
    """The camera of the upright ``width``×``height`` image at ``path`` under ``spec``.

    The file's EXIF is read only when ``spec`` gives no focal length; the 35 mm equivalent focal length
    depends only on the image diagonal, so the EXIF orientation does not change it.
    """
    focal = exif_focal_35mm(path) if spec.focal_unknown else None
    return spec.resolve(width, height, focal)
