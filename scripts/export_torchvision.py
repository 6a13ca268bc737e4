"""Export torchvision classifiers to .pt2 files that delegate-sdk reads (`compare`, `inspect`, `lower` take a .pt2).

This runs in its own environment, never in delegate-sdk's: the only torchvision wheels on this machine's registry
are CUDA builds that need torch 2.14.1, and their C extension does not load against the CPU torch 2.13.0 the
vendor toolchains are pinned to. The model definitions are plain PyTorch, so a program exported here loads and runs
in delegate-sdk's environment (torch.export's format is read by the older release; `scripts/dev torchvision-models`
checks that on every file it writes). Run it through that command, which builds the environment:

    scripts/dev torchvision-models models/tv --models mobilenet_v3_small,squeezenet1_1

Weights are random (torchvision's own initialisation, seeded), batch norm statistics are re-estimated on random
images so that activations have realistic ranges, and the program is exported in eval mode at batch 1.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

DEFAULT = "resnet18,mobilenet_v2,mobilenet_v3_small,squeezenet1_1"


def build(name: str, size: int, seed: int) -> torch.nn.Module:
    from torchvision import models

    try:
        factory = models.get_model_builder(name)
    except ValueError:
        raise SystemExit(f"unknown torchvision model {name!r}; known: {', '.join(models.list_models(models))}")
    torch.manual_seed(seed)
    model = factory(weights=None)
    # momentum=None: a plain average over the batches below, not one dominated by the last
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    g = torch.Generator().manual_seed(seed)
    model.train()
    with torch.no_grad():
        for _ in range(4):
            model(torch.randn(8, 3, size, size, generator=g))
    return model.eval()


def example_input(size: int, seed: int) -> torch.Tensor:
    return torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(seed + 1))


def fingerprint(y: torch.Tensor) -> dict[str, object]:
    return {"norm": float(y.norm()), "first": [float(v) for v in y.flatten()[:8]]}


def verify(out: Path) -> None:
    """In delegate-sdk's environment: every program in the manifest loads and gives the outputs it gave where it
    was exported (torch.export does not promise that an older release reads a newer one's files)."""
    manifest = json.loads((out / "manifest.json").read_text())
    for entry in manifest["models"]:
        ep = torch.export.load(str(out / entry["file"]))
        with torch.no_grad():
            y = ep.module()(example_input(entry["input"][-1], manifest["seed"]))
        got, want = fingerprint(y), entry["output"]
        rel = abs(got["norm"] - want["norm"]) / max(want["norm"], 1e-12)
        if rel > 1e-4 or not torch.allclose(torch.tensor(got["first"]), torch.tensor(want["first"]), rtol=1e-4,
                                            atol=1e-5):
            raise SystemExit(f"{entry['file']}: outputs under torch {torch.__version__} differ from those under "
                             f"torch {manifest['torch']} (norm {got['norm']:.6g} vs {want['norm']:.6g})")
        print(f"{entry['file']}: loads and matches under torch {torch.__version__}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, help="directory for NAME.pt2 files and manifest.json")
    ap.add_argument("--verify", action="store_true", help="only check the files in OUT load and match here")
    ap.add_argument("--models", default=DEFAULT, help=f"comma-separated torchvision names [{DEFAULT}]")
    ap.add_argument("--size", type=int, default=224, help="input height and width [224]")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.verify:
        return verify(args.out)
    import torchvision

    args.out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in args.models.split(","):
        model = build(name, args.size, args.seed)
        x = example_input(args.size, args.seed)
        path = args.out / f"{name}.pt2"
        torch.export.save(torch.export.export(model, (x,)), str(path))
        with torch.no_grad():
            y = model(x)
        written.append({"model": name, "file": path.name, "input": [1, 3, args.size, args.size],
                        "output": fingerprint(y)})
        print(f"wrote {path}")
    manifest = {"torch": torch.__version__, "torchvision": torchvision.__version__, "seed": args.seed,
                "weights": "random (torchvision init), batch norm statistics re-estimated on 32 random images",
                "models": written}
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


if __name__ == "__main__":
    main()
