"""The one exception class of :mod:`repscope.analyses`."""


class AnalysisError(Exception):
    """Raised for every user-facing failure in :mod:`repscope.analyses`.

    The message says what was given, what is allowed, and where.
    """
