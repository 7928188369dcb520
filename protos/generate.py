"""Generate Cohort's Python API code (messages, .pyi stubs, gRPC stubs) from protos/cohort.

    python protos/generate.py           # rewrite shared/cohort/api to match the protos
    python protos/generate.py --check   # exit 1, listing the differences, if it does not match

Output goes to a temporary tree first and is then synced, so files of a deleted .proto disappear
too. The google/* protos are only read (their Python code comes from googleapis-common-protos).
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
OUTPUT_ROOT = ROOT / "shared"
API_PACKAGE = Path("cohort") / "api"
PACKAGE_DOC = '"""Generated from protos/{path} by `make proto`. Do not edit."""\n'


def generate(into: Path) -> None:
    sources = sorted(str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / API_PACKAGE).rglob("*.proto"))
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={into}",
        f"--pyi_out={into}",
        f"--grpc_python_out={into}",
        *sources,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed (see the messages above)")
    for directory in sorted({p.parent for p in (into / API_PACKAGE).rglob("*.py")} | {into / API_PACKAGE}):
        while directory != into / "cohort":
            init = directory / "__init__.py"
            if not init.exists():
                init.write_text(PACKAGE_DOC.format(path=directory.relative_to(into)))
            directory = directory.parent


def differences(generated: Path, committed: Path) -> list[str]:
    found: list[str] = []
    generated_files = {p.relative_to(generated) for p in generated.rglob("*") if p.is_file()}
    committed_files = {
        p.relative_to(committed) for p in committed.rglob("*") if p.is_file() and "__pycache__" not in p.parts
    }
    for rel in sorted(generated_files - committed_files):
        found.append(f"missing: {rel}")
    for rel in sorted(committed_files - generated_files):
        found.append(f"stale: {rel}")
    for rel in sorted(generated_files & committed_files):
        if not filecmp.cmp(generated / rel, committed / rel, shallow=False):
            found.append(f"differs: {rel}")
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 on any difference")
    options = parser.parse_args()
    committed = OUTPUT_ROOT / API_PACKAGE
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        generate(out)
        found = differences(out / API_PACKAGE, committed)
        if options.check:
            for line in found:
                print(f"{committed.relative_to(ROOT)}: {line}")
            if found:
                print("generated code differs from the protos: run `make proto` and commit the result")
            return 1 if found else 0
        if found:
            shutil.rmtree(committed, ignore_errors=True)
            shutil.copytree(out / API_PACKAGE, committed)
        print(f"{committed.relative_to(ROOT)}: {len(found)} file(s) updated")
        return 0


if __name__ == "__main__":
    sys.exit(main())
