"""The one error every layer raises for bad usage or input."""

from __future__ import annotations


class UsageError(Exception):
    """Bad usage or input (a flag, a file, a folder): run_search.py prints it as one line naming the fix
    and exits 2, with no traceback. Raised by the request checks, the experiment folder and the Tune side
    alike, so it lives in the lowest layer."""
