"""Errors that the CLI reports as one line (no traceback).

Everything probelab raises on bad user input is a :class:`ProbelabError`; the CLI catches it,
prints ``error: <message>`` and exits non-zero. Library users can catch it the same way.
"""


class ProbelabError(Exception):
    """Bad input or an unusable artifact, described in one line."""


class ModelNotFound(ProbelabError):
    """An unknown model name or a missing / unreadable model folder."""


class NetworkDisabled(ProbelabError):
    """A hub download was needed but network access was not allowed."""


class ProbeFileError(ProbelabError):
    """A malformed probe file (the message names the file and line)."""


class CaptureError(ProbelabError):
    """Invalid capture request (empty text list, bad selection, ...)."""
