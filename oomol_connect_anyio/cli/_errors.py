"""Exit codes, and which error ends the program with which code."""

from __future__ import annotations

import enum
import sys

from .. import (
    ApiError,
    AuthenticationError,
    ConnectionError,
    InstallFailedError,
    JournalError,
    JournalMismatchError,
    OomolConnectError,
    RecordedError,
    TaskFailedError,
    TaskStoppedError,
    TimeoutError,
)

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup


class UsageError(Exception):
    """Bad arguments or input, found before anything was sent."""


class LocalError(Exception):
    """This machine refused what the command needs (a port in use, say)."""


class Exit(enum.IntEnum):
    OK = 0
    UNEXPECTED = 1
    USAGE = 2
    FAILED = 3
    STOPPED = 4
    TIMED_OUT = 5
    API = 6
    CONNECTION = 7
    AUTH = 8
    LOCAL = 9
    INTERRUPTED = 130
    BROKEN_PIPE = 141


EPILOG = """\
exit codes:
  0    success
  1    unexpected outcome (a bug, or a demo that did not behave)
  2    bad usage or input: arguments, ids, -i values, files, JSON, base URL
  3    the task failed (run-many: a job failed; install: it failed)
  4    the task was stopped
  5    timed out: --timeout (the tasks it created are stopped), or run-many jobs
       that all failed by --task-timeout
  6    the server answered with an error (HTTP 4xx/5xx, e.g. an unknown manifest)
  7    the server could not be reached or did not answer (--request-timeout)
  8    the server refused the token (HTTP 401/403)
  9    a local resource failed (e.g. the emulator's port is in use, or the journal
       cannot be written)
  130  interrupted (Ctrl-C, SIGINT); tasks this command created were stopped first
  143  terminated (SIGTERM), 129 hung up (SIGHUP): as for Ctrl-C (128 + the signal)
  141  stdout was closed early (e.g. piped into head)"""

_CODES: tuple[tuple[type[Exception], Exit], ...] = (
    (UsageError, Exit.USAGE),
    (LocalError, Exit.LOCAL),
    (TaskFailedError, Exit.FAILED),
    (InstallFailedError, Exit.FAILED),
    (TaskStoppedError, Exit.STOPPED),
    (TimeoutError, Exit.TIMED_OUT),
    (AuthenticationError, Exit.AUTH),
    (ApiError, Exit.API),
    (ConnectionError, Exit.CONNECTION),
    (RecordedError, Exit.FAILED),  # a job that failed in an earlier attempt of the batch
    (JournalMismatchError, Exit.USAGE),  # the jobs, or the server, are not the batch's
    (JournalError, Exit.LOCAL),  # the journal file could not be written or synced
    # Any other error the library names (a lookup that cannot tell a task apart, say):
    # the job failed, reported in one line like the rest.
    (OomolConnectError, Exit.FAILED),
)


def exit_code(error: BaseException) -> Exit | None:
    """The exit code of an expected error; ``None`` for anything else (a bug)."""
    return next((code for kind, code in _CODES if isinstance(error, kind)), None)


def primary_error(error: BaseException) -> BaseException:
    """The error that explains a (possibly grouped) failure.

    Groups come from task groups (trio wraps even a lone Ctrl-C) and from a
    fail-fast ``run_many``: a ``KeyboardInterrupt`` wins, then the first
    error with an exit code.
    """
    if not isinstance(error, BaseExceptionGroup):
        return error
    leaves = [primary_error(inner) for inner in error.exceptions]
    interrupt = [leaf for leaf in leaves if isinstance(leaf, KeyboardInterrupt)]
    known = [leaf for leaf in leaves if exit_code(leaf) is not None]
    return (interrupt or known or [error])[0]
