"""The committed generated code is exactly what `make proto` produces from protos/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_generated_code_matches_the_protos():
    result = subprocess.run(
        [sys.executable, str(ROOT / "protos" / "generate.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_rpc_has_an_http_binding_and_its_own_messages():
    """Contract conventions (README) that buf lint does not check: REST bindings, no shared request types."""
    from google.api import annotations_pb2

    import cohort.api as api

    checked = 0
    for module_file in Path(api.__file__).parent.rglob("*_pb2.py"):
        module_name = "cohort." + ".".join(
            module_file.relative_to(ROOT / "shared" / "cohort").with_suffix("").parts
        )
        module = __import__(module_name, fromlist=["DESCRIPTOR"])
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                options = method.GetOptions()
                assert options.HasExtension(annotations_pb2.http), f"{service.full_name}.{method.name}"
                assert method.input_type.name == f"{method.name}Request"
                assert method.output_type.name == f"{method.name}Response"
                checked += 1
    declared = sum(
        line.lstrip().startswith("rpc ")
        for proto in (ROOT / "protos" / "cohort").rglob("*.proto")
        for line in proto.read_text().splitlines()
    )
    assert checked == declared > 0
