"""Child process for compilation: check the TOSA graph on the reference model, then run Vela.

Run as ``python _child.py CHECK_TOSA INPUTS_NPZ OUTPUTS_NPZ -- VELA_ARGS...`` (by path, standalone).
Both tools are native code that may print to the C-level stdout or abort on a
graph they reject; the parent captures the output and survives the crash.
Exit codes: 0 success, 3 the reference model rejected the graph, else Vela's.
"""

from __future__ import annotations

import sys

import numpy as np


def main(argv: list[str]) -> int:
    sep = argv.index("--")
    check_tosa, inputs_npz, outputs_npz = argv[:sep]
    vela_args = argv[sep + 1:]
    if check_tosa != "-":
        import tosa_reference_model as rm

        with open(check_tosa, "rb") as f:
            graph = f.read()
        with np.load(inputs_npz, allow_pickle=False) as data:
            inputs = [data[f"i{i}"] for i in range(len(data.files))]
        try:
            outs, status = rm.run(graph, inputs)
        except Exception as e:
            print(f"REFERENCE-MODEL-ERROR: {e}", flush=True)
            return 3
        if status != rm.GraphStatus.TOSA_VALID:
            print(f"REFERENCE-MODEL-ERROR: status {status.name}", flush=True)
            return 3
        np.savez(outputs_npz, **{f"o{i}": np.asarray(o) for i, o in enumerate(outs)})
    from ethosu.vela import vela

    return int(vela.main(vela_args) or 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
