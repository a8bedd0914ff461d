"""The one exception class of :mod:`repscope.probes`."""


class ProbeError(Exception):
    """Raised for every user-facing failure in :mod:`repscope.probes`.

    The message says what was given, what is allowed, and where.
    """
