"""Connecting to a ``dask.distributed`` scheduler, with every network wait bounded.

``distributed.Client(address, timeout=...)`` bounds the TCP connection but not the
handshake after it: a server that accepts and never answers holds the client forever,
and one that answers in another protocol (HTTP) is read as a frame length (an attempt
to allocate exabytes). :func:`connect` first asks the server who it is, within
``timeout`` seconds, and only then starts the client.
"""
from __future__ import annotations

import asyncio

from .errors import AnalysisError

__all__ = ["connect"]


_HINT = "Check the address and that the scheduler runs (dask scheduler prints its address)"


class _Silent(Exception):
    pass


async def _identity(address: str, timeout: float):
    from distributed.comm import connect as open_comm

    try:
        comm = await asyncio.wait_for(open_comm(address, timeout=timeout), 2 * timeout)
    except (asyncio.TimeoutError, TimeoutError) as err:
        raise _Silent(2 * timeout) from err  # connected, then no handshake
    try:
        await comm.write({"op": "identity", "reply": True})
        return await asyncio.wait_for(comm.read(), timeout)
    except (asyncio.TimeoutError, TimeoutError) as err:
        raise _Silent(timeout) from err
    finally:
        comm.abort()


def _check_scheduler(address: str, timeout: float) -> None:
    """Refuse an address where no dask scheduler answers within ``timeout`` seconds."""
    try:
        reply = asyncio.run(_identity(address, timeout))
    except _Silent as waited:
        raise AnalysisError(f"The dask scheduler at {address!r} did not answer (waited {waited.args[0]:g} s): "
                            f"something accepts connections there but does not speak dask. {_HINT}") from None
    except OSError as err:
        if "handshake" in str(err).lower():
            raise AnalysisError(f"The dask scheduler at {address!r} did not answer ({err}): something "
                                f"accepts connections there but does not speak dask. {_HINT}") from None
        raise AnalysisError(f"Cannot connect to the dask scheduler at {address!r}: {err}. {_HINT}") from None
    except Exception as err:  # another protocol's bytes read as dask frames (MemoryError, ValueError, ...)
        raise AnalysisError(f"The server at {address!r} did not answer as a dask scheduler "
                            f"({type(err).__name__}: {str(err)[:120]}). Check the address: it should be a "
                            "dask scheduler's, e.g. tcp://HOST:8786") from None
    if not (isinstance(reply, dict) and reply.get("type") == "Scheduler"):
        kind = reply.get("type") if isinstance(reply, dict) else type(reply).__name__
        raise AnalysisError(f"The server at {address!r} did not answer as a dask scheduler (it is a {kind!s}). "
                            "Give the scheduler's address, e.g. tcp://HOST:8786")


def connect(address: str, timeout: float = 30.0):
    """A ``distributed.Client`` on the scheduler at ``address``, or a clear error.

    Parameters
    ----------
    address : str
        The scheduler's address, e.g. ``tcp://127.0.0.1:8786``.
    timeout : float
        Seconds to wait for each step: the connection, the scheduler's answer, the
        client's start.

    Raises
    ------
    AnalysisError
        Naming the address, if nothing listens there, something listens but does not
        answer within ``timeout``, or what answers is not a dask scheduler.

    Examples
    --------
    >>> connect("tcp://127.0.0.1:1", timeout=2)  # doctest: +SKIP
    Traceback (most recent call last):
    ...
    repscope.analyses.errors.AnalysisError: Cannot connect to the dask scheduler at 'tcp://127.0.0.1:1': ...
    """
    try:
        from distributed import Client
    except ImportError:
        raise AnalysisError('Connecting to a dask scheduler needs dask.distributed: '
                            'pip install "repscope[dask]"') from None
    _check_scheduler(address, timeout)
    try:
        return Client(address, timeout=timeout)
    except (OSError, TimeoutError, ValueError) as err:
        raise AnalysisError(f"Cannot connect to the dask scheduler at {address!r}: {err}") from None
