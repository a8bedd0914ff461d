"""The one exception class of :mod:`analyses`."""


class AnalysisError(Exception):
    """Raised for every user-facing failure in :mod:`analyses`.

    The message says what was given, what is allowed, and where.
    """
