"""Deliberately faulty delegate plugins ("canaries") that ``delegate-sdk conform`` must catch.

Test fixtures only: they "compile" a partition by saving its ExportedProgram into the blob and run it in
eager PyTorch, then break it in exactly one way each. Register them for a run with, e.g.::

    DELEGATE_SDK_PLUGINS="canary_lsb=dsdk_canaries.plugins:LSB" PYTHONPATH=tests/conformance/canaries \\
        delegate-sdk conform --plugin canary_lsb -k 'op/add/'
"""
