"""The one exception class of :mod:`probes`."""


class ProbeError(Exception):
    """Raised for every user-facing failure in :mod:`probes`.

    The message says what was given, what is allowed, and where.
    """
