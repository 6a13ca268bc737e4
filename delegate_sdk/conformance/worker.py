"""Entry point of a conformance worker process: ``python -m delegate_sdk.conformance.worker FD``.

``FD`` is the worker's end of a socket pair inherited from the parent (:mod:`runner`), spoken to with
``multiprocessing.connection.Connection`` (pickled tuples). Not a user-facing command.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from multiprocessing.connection import Connection


def serve_inherited(serve: Callable[[Connection], None], argv: list[str] | None = None) -> None:
    """Run ``serve`` on the connection whose file descriptor is the first argument (the worker, the fresh-process
    zygote and the worker template are all started this way), closing it when ``serve`` returns."""
    args = sys.argv[1:] if argv is None else argv
    conn = Connection(int(args[0]))
    try:
        serve(conn)
    finally:
        conn.close()


def main(argv: list[str] | None = None) -> None:
    from delegate_sdk.conformance.runner import _worker_main

    serve_inherited(_worker_main, argv)


if __name__ == "__main__":
    main()
