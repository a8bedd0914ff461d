"""Exception classes of :mod:`repscope.training`."""


class TrainingError(Exception):
    """Raised for every user-facing failure in :mod:`repscope.training`.

    The message says what was given, what is allowed, and where.
    """


class DataError(TrainingError):
    """A data set is missing, corrupt, or laid out differently than expected."""
