"""Errors that xcodec reports to users as one line (the CLI exits with code 1 on any of them)."""


class XcodecError(Exception):
    """Base class: bad input, a bad file, or a missing model."""


class FormatError(XcodecError):
    """An ``.xsc`` file is malformed, corrupted or of an unsupported version."""


class InputError(XcodecError):
    """An input image cannot be coded as asked (unreadable, unsupported mode, too large)."""


class ModelError(XcodecError):
    """A model is unknown, missing, or its weights do not match the manifest or the file."""


class OutputError(XcodecError):
    """An output cannot be written, or writing it would destroy data (an input, an existing file)."""


class TrainingError(XcodecError):
    """A training run cannot start as asked: an unknown stage or option, weights or a checkpoint that do not fit."""
