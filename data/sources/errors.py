"""Which read errors are transient: worth another try of the whole read, never a reason to quarantine the file.

A network or I/O failure (connection refused or reset, a timeout, HTTP 5xx/429/408, EIO...) says nothing about the
file. Quarantining it would store the loss in a complete, reusable artifact, so the readers raise such errors as
`TransientReadError` instead: the stage fails and its retries fire. A file that is itself bad (404/410, a corrupt
gzip, a format we cannot parse) is quarantined and reading goes on.
"""

from __future__ import annotations

import errno
import http.client
import re
import sys

# Statuses a server answers when it is overloaded or briefly down; 501 and 505 are lasting refusals.
_RETRY_STATUS = frozenset({408, 425, 429})
_LASTING_5XX = frozenset({501, 505})
_TRANSIENT_ERRNOS = frozenset(
    getattr(errno, name)
    for name in ("EIO", "EAGAIN", "EINTR", "ETIMEDOUT", "ECONNREFUSED", "ECONNRESET", "ECONNABORTED", "EPIPE",
                 "ENETDOWN", "ENETUNREACH", "ENETRESET", "EHOSTDOWN", "EHOSTUNREACH", "ESTALE", "EREMOTEIO")
    if hasattr(errno, name)
)
# pyarrow's I/O errors carry the errno in their message only: "... Detail: [errno 5] Input/output error".
_ERRNO_IN_MESSAGE = re.compile(r"\[errno (\d+)\]", re.IGNORECASE)
# A missing or forbidden file stays missing or forbidden: the file's fault (or the config's), not the network's.
_LASTING = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)


class TransientReadError(OSError):
    """Reading a source failed for a reason a later try can fix; the stage fails so that it is retried.

    An OSError, so code that handles I/O errors handles it. It is built from its message alone, so it pickles and
    comes back from a worker process as itself."""


def http_status(err: BaseException) -> int | None:
    """The HTTP status an error carries: aiohttp's `.status`, requests'/httpx' `.response.status_code`, urllib's
    `.code`, botocore's response metadata; None when it carries none."""
    candidates = [getattr(err, "status", None), getattr(err, "code", None)]
    response = getattr(err, "response", None)
    candidates.append(getattr(response, "status_code", None))
    if isinstance(response, dict):
        candidates.append(response.get("ResponseMetadata", {}).get("HTTPStatusCode"))
    for status in candidates:
        if isinstance(status, int) and not isinstance(status, bool) and 100 <= status <= 599:
            return status
    return None


def _library_errors() -> tuple[tuple[type, ...], tuple[type, ...]]:
    """(transient, lasting) exception types of the HTTP clients this process has imported: one that is not imported
    cannot have raised anything."""
    transient: list[type] = [ConnectionError, TimeoutError, http.client.IncompleteRead]
    lasting: list[type] = []
    if aiohttp := sys.modules.get("aiohttp"):
        transient += [aiohttp.ClientConnectionError, aiohttp.ClientPayloadError]
        lasting.append(aiohttp.ClientSSLError)  # a certificate problem does not go away on its own
    if requests := sys.modules.get("requests"):
        exc = requests.exceptions
        transient += [exc.ConnectionError, exc.Timeout, exc.ChunkedEncodingError]
        lasting.append(exc.SSLError)
    if httpx := sys.modules.get("httpx"):
        transient += [httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError]
    return tuple(transient), tuple(lasting)


def _transient_one(err: BaseException) -> bool:
    if isinstance(err, TransientReadError):
        return True
    if isinstance(err, _LASTING):
        return False
    status = http_status(err)
    if status is not None:
        return status in _RETRY_STATUS or (status >= 500 and status not in _LASTING_5XX)
    transient, lasting = _library_errors()
    if isinstance(err, lasting):
        return False
    if isinstance(err, transient):
        return True
    # Any other OSError (gzip's BadGzipFile, pyarrow's "not a parquet file"...) is about the bytes, not the wire.
    if not isinstance(err, OSError):
        return False
    code = err.errno
    if code is None and (found := _ERRNO_IN_MESSAGE.search(str(err))):
        code = int(found.group(1))
    return code in _TRANSIENT_ERRNOS


def is_transient(err: BaseException | None) -> bool:
    """Whether `err`, or an error it was raised from (`raise ... from err`: map_shards wraps a worker's error so), is
    a network or I/O failure that another try can fix."""
    seen: set[int] = set()
    while isinstance(err, BaseException) and id(err) not in seen:
        seen.add(id(err))
        if _transient_one(err):
            return True
        err = err.__cause__
    return False


def raise_if_transient(err: BaseException, source: str) -> None:
    """Called where a reader is about to quarantine `source` (or part of it) for `err`: a transient error is raised
    instead, as a TransientReadError naming the source."""
    if isinstance(err, TransientReadError):
        raise err
    if is_transient(err):
        raise TransientReadError(f"{source}: {type(err).__name__}: {str(err)[:300]} (a network or I/O error, not a "
                                 "bad file: nothing is quarantined, the read fails so that it is retried)") from err
