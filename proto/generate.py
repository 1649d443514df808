"""Regenerate the Python code for proto/banditd/v1/*.proto (``--check``: fail if it is stale).

Run: python proto/generate.py [--check]
"""

from __future__ import annotations

import argparse
import filecmp
import pathlib
import shutil
import sys
import tempfile

from grpc_tools import protoc

ROOT = pathlib.Path(__file__).resolve().parent
OUT = ROOT / "banditd" / "v1"
SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def generate(dest: pathlib.Path) -> list[pathlib.Path]:
    protos = sorted(str(p.relative_to(ROOT)) for p in OUT.glob("*.proto"))
    wkt = pathlib.Path(protoc.__file__).parent / "_proto"
    args = ["protoc", f"-I{ROOT}", f"-I{wkt}", f"--python_out={dest}", f"--pyi_out={dest}",
            f"--grpc_python_out={dest}", *protos]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    return sorted(p for p in (dest / "banditd" / "v1").iterdir() if p.name.endswith(SUFFIXES))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--check", action="store_true", help="compare instead of writing")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        produced = generate(pathlib.Path(tmp))
        stale = [p.name for p in produced
                 if not (OUT / p.name).exists() or not filecmp.cmp(p, OUT / p.name, shallow=False)]
        if args.check:
            if stale:
                print(f"generated code is stale: {', '.join(stale)}; run python proto/generate.py")
                return 1
            print("generated code is current")
            return 0
        for p in produced:
            shutil.copyfile(p, OUT / p.name)
        print(f"wrote {', '.join(p.name for p in produced)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
