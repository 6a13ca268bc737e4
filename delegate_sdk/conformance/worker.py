"""Entry point of a conformance worker process: ``python -m delegate_sdk.conformance.worker FD``.

``FD`` is the worker's end of a socket pair inherited from the parent (:mod:`runner`), spoken to with
``multiprocessing.connection.Connection`` (pickled tuples). Not a user-facing command.
"""

from __future__ import annotations

import sys
from multiprocessing.connection import Connection


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    conn = Connection(int(args[0]))
    from delegate_sdk.conformance.runner import _worker_main

    try:
        _worker_main(conn)
    finally:
        conn.close()


if __name__ == "__main__":
    main()
