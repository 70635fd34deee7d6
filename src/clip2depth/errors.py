"""Errors a user can cause. The CLI prints their message (no traceback) and exits non-zero."""


class Clip2DepthError(Exception):
    """Base class: the message names the offending thing and what to do about it."""


class ConfigError(Clip2DepthError):
    """A preset, recipe, flag or override value is unknown or invalid."""


class CheckpointError(Clip2DepthError):
    """A checkpoint directory or weights file is missing, corrupt or made for another model."""


class DataError(Clip2DepthError):
    """An input file (image, depth map, list file, dataset root) is missing, unreadable or inconsistent."""
