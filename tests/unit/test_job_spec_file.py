"""`cohort train SPEC` files: YAML or JSON, a Job or a bare JobSpec, and errors that name the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from cohort.api.jobs.v1 import jobs_pb2
from cohort.cli.jobs import SpecError, load_job_spec

REPO = Path(__file__).resolve().parents[2]
DEMO_SPEC = REPO / "shared/cohort/cli/specs/toolbench-demo.yaml"
EXAMPLES = sorted((REPO / "deploy" / "specs").glob("*")) + [DEMO_SPEC]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_spec_loads(path):
    job = load_job_spec(path)
    assert job.spec.iterations > 0
    assert job.spec.runtime.WhichOneof("kind") is not None
    assert job.spec.dataset.WhichOneof("source") is not None


def test_demo_spec_is_a_toolbench_job():
    job = load_job_spec(DEMO_SPEC)
    assert job.spec.runtime.WhichOneof("kind") == "toolbench"
    assert job.spec.budget.limit_micro_usd == 5_000_000


def test_bare_job_spec_and_camel_case_are_accepted(tmp_path):
    path = tmp_path / "spec.json"
    path.write_text('{"groupSize": 4, "iterations": 3, "runtime": {"toolbench": {}}}')
    job = load_job_spec(path)
    assert job.spec.group_size == 4
    assert job.spec.iterations == 3


@pytest.mark.parametrize(
    "name,text,message",
    [
        ("typo.yaml", "spec:\n  iteratons: 3\n", "iteratons"),
        ("bad.yaml", "spec: [unclosed\n", "not valid YAML"),
        ("bad.json", "{", "not valid JSON"),
        ("list.yaml", "- 1\n- 2\n", "expected a mapping"),
        ("type.json", '{"spec": {"iterations": "many"}}', "iterations"),
        ("enum.yaml", "spec:\n  failure_policy: FAILURE_POLICY_SOMETIMES\n", "FAILURE_POLICY_SOMETIMES"),
    ],
)
def test_bad_spec_files_name_the_problem(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(SpecError) as raised:
        load_job_spec(path)
    assert message in raised.value.message
    assert str(path) in raised.value.message


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(SpecError, match="No such file"):
        load_job_spec(tmp_path / "absent.yaml")


def test_job_fields_beside_spec_are_kept(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("display_name: nightly\nspec:\n  iterations: 2\n")
    job = load_job_spec(path)
    assert job.display_name == "nightly"
    assert isinstance(job, jobs_pb2.Job)
