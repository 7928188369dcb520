"""toolbench: families, generation, tools, checker, reference policies, learnability, the agent."""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from collections import Counter, defaultdict

import numpy as np
import pytest

from cohort.api.trajectory.v1 import trajectory_pb2
from cohort.platform.errors import InvalidArgument
from cohort.sdk import TrajectoryRecorder
from cohort.sdk.runtime import AgentContext, DecisionRequest, Task
from cohort.sdk.toolbench import (
    ANSWER,
    DEFAULT_MAX_STEPS,
    FAMILIES,
    HEAD,
    SOLUTIONS,
    TOOL_OPTIONS,
    TOOLS,
    ToolbenchOptions,
    ToolError,
    call_tool,
    check_answer,
    generate_queries,
    knowledge,
    make_agent,
    oracle_choice,
    oracle_decider,
    parse_query,
    policy_heads,
    task_from_query,
    uniform_decider,
)
from cohort.sdk.toolbench.tasks import TEMPLATES

HELDOUT = 252
TRAIN = 252
DEFAULT_OPTIONS = ToolbenchOptions()


def run_agent(task, decider, *, seed=0, options=DEFAULT_OPTIONS, recorder=None, max_steps=0):
    context = AgentContext(task, decider=decider, seed=seed, recorder=recorder, max_steps=max_steps)
    result = asyncio.run(make_agent(options)(task, context))
    return result, context


def run_all(split, count, decider_factory, seed=0):
    async def go():
        agent, decider, out = make_agent(), decider_factory(), []
        for i, query in enumerate(generate_queries(split, count, seed=seed)):
            task = task_from_query(query)
            context = AgentContext(task, decider=decider, seed=1000 + i)
            out.append((task, await agent(task, context), context))
        return out

    return asyncio.run(go())


def scripted(*choices):
    """A decider that picks `choices` in order (then `answer`)."""
    queue = list(choices)

    async def decide(request: DecisionRequest) -> trajectory_pb2.Decision:
        options = tuple(request.options)
        choice = queue.pop(0) if queue else ANSWER
        index = options.index(choice)
        probabilities = [0.0] * len(options)
        probabilities[index] = 1.0
        return trajectory_pb2.Decision(
            head=request.head, options=options, chosen_index=index, chosen=choice, log_prob=0.0,
            probabilities=probabilities, features=dict(request.features),
        )  # fmt: skip

    return decide


# --------------------------------------------------------------------------------------------------
# Families and generation


def test_families_need_different_sequences_of_one_to_four_tool_calls():
    assert len(FAMILIES) >= 5
    by_family = defaultdict(set)
    for split in ("train", "heldout"):
        for query in generate_queries(split, 140, seed=5):
            payload = json.loads(query.payload_json)
            solution = tuple(payload["solution"])
            assert 1 <= len(solution) <= 4
            assert set(solution) <= set(TOOL_OPTIONS) - {ANSWER}
            by_family[payload["family"]].add(solution)
    assert set(by_family) == set(FAMILIES)
    families = list(by_family)
    for i, a in enumerate(families):
        for b in families[i + 1 :]:
            assert not by_family[a] & by_family[b], (a, b)
    lengths = {len(s) for sequences in by_family.values() for s in sequences}
    assert lengths == {1, 2, 3, 4}


def test_oracle_runs_the_solution_of_each_query():
    for task, result, context in run_all("heldout", 63, oracle_decider):
        chosen = [d.chosen for d in context.decisions]
        assert chosen == [*task.payload["solution"], ANSWER]
        assert result.success


def test_generation_is_deterministic_by_seed():
    first = generate_queries("train", 50, seed=7)
    again = generate_queries("train", 50, seed=7)
    other = generate_queries("train", 50, seed=8)
    assert [q.SerializeToString() for q in first] == [q.SerializeToString() for q in again]
    assert [q.text for q in first] != [q.text for q in other]
    assert len({q.query_id for q in first + other}) == 100


def test_generation_restricted_to_families():
    queries = generate_queries("heldout", 20, seed=1, families=["kb_fact", "multi_hop"])
    assert Counter(json.loads(q.payload_json)["family"] for q in queries) == {"kb_fact": 10, "multi_hop": 10}


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"split": "test", "count": 3}, "split"),
        ({"split": "train", "count": -1}, "count"),
        ({"split": "train", "count": 3, "families": ["poetry"]}, "families"),
    ],
)
def test_generation_rejects_bad_arguments(kwargs, field):
    with pytest.raises(InvalidArgument) as info:
        generate_queries(**kwargs)
    assert info.value.field == field


def _skeleton(text: str) -> str:
    """The phrasing of a query: entities, numbers and unit words masked."""
    names = sorted(knowledge.KNOWLEDGE_BASE, key=len, reverse=True)
    text = re.sub("|".join(map(re.escape, names)), "<E>", text)
    text = re.sub(r"\d+", "<N>", text)
    units = r"\b(degrees \w+|celsius|fahrenheit|\w+metres|\w+meters|metres|meters|miles|kilos|kilograms|"
    units += r"pounds|lbs|liters|litres|gallons|feet|ft|inches)\b"
    return re.sub(units, "<U>", text, flags=re.IGNORECASE)


def test_train_and_heldout_use_disjoint_entities_numbers_and_phrasings():
    payloads = {split: [] for split in ("train", "heldout")}
    texts = {split: [] for split in ("train", "heldout")}
    for split in payloads:
        for query in generate_queries(split, 400, seed=11):
            payloads[split].append(json.loads(query.payload_json))
            texts[split].append(query.text)

    def collect(split, key):
        return {value for p in payloads[split] for value in p.get(key, ())}

    assert collect("train", "entities") and collect("heldout", "entities")
    assert not collect("train", "entities") & collect("heldout", "entities")
    assert not collect("train", "numbers") & collect("heldout", "numbers")
    templates = {split: {p["template"].split("/", 1)[1] for p in payloads[split]} for split in payloads}
    assert all(t.startswith("train/") for t in templates["train"])
    assert all(t.startswith("heldout/") for t in templates["heldout"])
    for intent, by_split in TEMPLATES.items():
        assert not set(by_split["train"]) & set(by_split["heldout"]), intent
    skeletons = {split: {_skeleton(t) for t in texts[split]} for split in texts}
    assert not skeletons["train"] & skeletons["heldout"]
    # Every entity of a split appears in its knowledge-base split and nowhere else.
    train_kb = set(knowledge.COUNTRIES["train"]) | set(knowledge.MOUNTAINS["train"])
    heldout_kb = set(knowledge.COUNTRIES["heldout"]) | set(knowledge.MOUNTAINS["heldout"])
    assert not train_kb & heldout_kb
    assert collect("train", "entities") <= train_kb and collect("heldout", "entities") <= heldout_kb


def test_task_from_query_parses_the_payload():
    query = generate_queries("train", 1, seed=3)[0]
    task = task_from_query(query)
    assert task.query_id == query.query_id and task.text == query.text
    assert task.expected_answer == query.expected_answer
    assert task.payload["split"] == "train"
    query.payload_json = "[1, 2"
    with pytest.raises(InvalidArgument) as info:
        task_from_query(query)
    assert info.value.field == "query.payload_json"


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        ("What is 12 times 3?", "arithmetic"),
        ("Take 51 and divide it by 3. What do you get?", "arithmetic"),
        ("Convert 12 kilometres to miles.", "unit_conversion"),
        ("How many degrees Fahrenheit is 30 degrees Celsius?", "unit_conversion"),
        ("Name the capital city of Belgium.", "kb_fact"),
        ("How tall is K2?", "kb_fact"),
        ("Spell Chile's capital in capital letters.", "lookup_uppercase"),
        ("Write the capital of France backwards.", "lookup_reverse"),
        ("What is the number of letters in Peru's capital?", "lookup_count"),
        ("By how much does K2 exceed Denali in elevation?", "multi_hop"),
        ("How many meters higher is Everest than Mont Blanc?", "multi_hop"),
        ("Express the elevation gap between K2 and Denali in ft.", "multi_hop_convert"),
        ("Compute 3 plus 4 and verify the result before answering.", "verified_calc"),
        ("Tell me a joke.", "unknown"),
    ],
)
def test_parse_query_intents(text, intent):
    assert parse_query(text).intent == intent


# --------------------------------------------------------------------------------------------------
# Tools and checker


def test_tools_compute_and_look_up():
    assert TOOLS["calculator"](expression="37 * 12") == "444"
    assert TOOLS["calculator"](expression="7 / 2") == "3.5"
    assert TOOLS["convert_units"](value="12", from_unit="km", to_unit="mi") == "7.46"
    assert TOOLS["convert_units"](value="100", from_unit="c", to_unit="f") == "212"
    assert TOOLS["kb_lookup"](entity="france", attribute="capital") == "Paris"
    assert TOOLS["kb_lookup"](entity="K2", attribute="height") == "8611"
    assert TOOLS["reverse_text"](text="Paris") == "siraP"
    assert TOOLS["uppercase_text"](text="Paris") == "PARIS"
    assert TOOLS["count_letters"](text="Buenos Aires") == "11"
    code = TOOLS["verify"](expression="6 * 7", value="42")
    assert re.fullmatch(r"[0-9a-f]{6}", code)


@pytest.mark.parametrize(
    ("tool", "arguments"),
    [
        ("calculator", {}),
        ("calculator", {"expression": "two plus two"}),
        ("calculator", {"expression": "1 / 0"}),
        ("convert_units", {"value": "", "from_unit": "km", "to_unit": "mi"}),
        ("convert_units", {"value": "x", "from_unit": "km", "to_unit": "mi"}),
        ("convert_units", {"value": "3", "from_unit": "km", "to_unit": "kg"}),
        ("convert_units", {"value": "3", "from_unit": "parsec", "to_unit": "km"}),
        ("convert_units", {"value": "3", "from_unit": "km", "to_unit": "km"}),
        ("kb_lookup", {"entity": "", "attribute": "capital"}),
        ("kb_lookup", {"entity": "Atlantis", "attribute": "capital"}),
        ("kb_lookup", {"entity": "France", "attribute": "height"}),
        ("kb_lookup", {"entity": "France", "attribute": "kind"}),
        ("reverse_text", {"text": ""}),
        ("uppercase_text", {}),
        ("count_letters", {"text": ""}),
        ("verify", {"expression": "6 * 7", "value": "41"}),
        ("verify", {"expression": "", "value": "41"}),
        ("verify", {"expression": "6 * 7", "value": ""}),
    ],
)
def test_tools_fail_on_wrong_arguments(tool, arguments):
    with pytest.raises(ToolError):
        TOOLS[tool](**arguments)
    ok, message = call_tool(tool, arguments)
    assert not ok and message


def test_call_tool_reports_unknown_tools_and_arguments():
    assert call_tool("search_web", {}) == (False, "unknown tool 'search_web'")
    ok, message = call_tool("calculator", {"formula": "1 + 1"})
    assert not ok and "formula" in message
    assert call_tool("calculator", {"expression": "1 + 1"}) == (True, "2")


def test_check_answer():
    number = Task("q", "t", expected_answer="7.46")
    assert check_answer(number, "7.46") and check_answer(number, " 7.460 ")
    assert not check_answer(number, "7.47") and not check_answer(number, "") and not check_answer(number, "x")
    text = Task("q", "t", expected_answer="PARIS")
    assert check_answer(text, "PARIS") and not check_answer(text, "Paris")
    verified = Task("q", "t", expected_answer="42 [verified:abc123]")
    assert check_answer(verified, "42 [verified:abc123]") and not check_answer(verified, "42")
    assert not check_answer(Task("q", "t"), "anything")


# --------------------------------------------------------------------------------------------------
# Reference policies


def test_uniform_policy_rarely_succeeds_on_heldout():
    runs = run_all("heldout", HELDOUT, uniform_decider, seed=21)
    rate = sum(bool(result.success) for _, result, _ in runs) / len(runs)
    assert rate <= 0.25
    again = run_all("heldout", HELDOUT, uniform_decider, seed=21)
    assert [r.final_result for _, r, _ in runs] == [r.final_result for _, r, _ in again]


@pytest.mark.parametrize("split", ["train", "heldout"])
def test_oracle_policy_succeeds(split):
    runs = run_all(split, TRAIN if split == "train" else HELDOUT, oracle_decider, seed=22)
    rate = sum(bool(result.success) for _, result, _ in runs) / len(runs)
    assert rate >= 0.95
    assert all(result.termination == "completed" for _, result, _ in runs)


def test_deciders_return_proper_decisions():
    request = DecisionRequest(HEAD, {"state=arithmetic|0|none": 1.0}, TOOL_OPTIONS, seed=9)
    uniform = asyncio.run(uniform_decider()(request))
    n = len(TOOL_OPTIONS)
    assert uniform.log_prob == pytest.approx(-math.log(n))
    assert list(uniform.probabilities) == pytest.approx([1 / n] * n)
    assert uniform.chosen == TOOL_OPTIONS[uniform.chosen_index]
    assert uniform.chosen_index == int(np.random.default_rng(9).integers(n))
    assert asyncio.run(uniform_decider()(request)).chosen_index == uniform.chosen_index
    assert dict(uniform.features) == {"state=arithmetic|0|none": 1.0}
    oracle = asyncio.run(oracle_decider()(request))
    assert oracle.chosen == "calculator" and oracle.log_prob == 0.0
    assert oracle.probabilities[oracle.chosen_index] == 1.0 and sum(oracle.probabilities) == 1.0
    with pytest.raises(InvalidArgument):
        asyncio.run(oracle_decider()(DecisionRequest("other_head", {}, TOOL_OPTIONS)))


def test_policy_heads_declare_the_tool_options():
    (head,) = policy_heads()
    assert head.name == HEAD and tuple(head.options) == TOOL_OPTIONS
    assert head.feature_buckets & (head.feature_buckets - 1) == 0


def test_agent_runs_with_a_policy_snapshot():
    policy = pytest.importorskip("cohort.policy")
    spec = policy.HeadSpec.from_proto(policy_heads()[0])
    snapshot = policy.PolicySnapshot("p", 1, {HEAD: spec}, {HEAD: np.zeros(spec.feature_buckets)})
    task = task_from_query(generate_queries("train", 1, seed=4)[0])
    result, context = run_agent(task, policy.LocalDecider(snapshot), seed=5)
    assert context.decisions and all(
        d.log_prob == pytest.approx(-math.log(len(TOOL_OPTIONS))) for d in context.decisions
    )
    assert result.termination in ("completed", "max_steps")


# --------------------------------------------------------------------------------------------------
# Learnability: what a log-linear softmax over the features can represent and transfer


def _oracle_decisions(split, seed):
    return [d for _, _, context in run_all(split, 189, oracle_decider, seed=seed) for d in context.decisions]


def test_oracle_action_is_a_function_of_the_features_and_heldout_features_are_train_features():
    train, heldout = _oracle_decisions("train", 31), _oracle_decisions("heldout", 32)
    actions = defaultdict(set)
    for d in train + heldout:
        actions[frozenset(d.features)].add(d.chosen)
        assert oracle_choice(dict(d.features)) == d.chosen
    assert all(len(chosen) == 1 for chosen in actions.values())
    # One-hot weights on the conjunction key, crossed with the oracle's option, reproduce it.
    weights = {}
    for d in train:
        (state,) = [k for k in d.features if k.startswith("state=")]
        weights[(state, d.chosen)] = 1.0
    for d in train + heldout:
        logits = [sum(weights.get((k, option), 0.0) for k in d.features) for option in TOOL_OPTIONS]
        assert TOOL_OPTIONS[int(np.argmax(logits))] == d.chosen
    train_keys = {k for d in train for k in d.features}
    heldout_keys = {k for d in heldout for k in d.features}
    assert heldout_keys == train_keys
    assert len(train_keys) <= 64
    assert {frozenset(d.features) for d in heldout} == {frozenset(d.features) for d in train}


def test_need_flags_follow_the_open_parts_of_the_question():
    task = task_from_query(generate_queries("heldout", 1, seed=3, families=["multi_hop_convert"])[0])
    _, context = run_agent(task, oracle_decider())
    needs = [
        sorted(k[len("need=") :] for k in d.features if k.startswith("need=")) for d in context.decisions
    ]
    assert needs == [
        ["combine", "convert", "lookup"],
        ["combine", "convert", "lookup"],
        ["combine", "convert"],
        ["convert"],
        ["nothing"],
    ]
    task = task_from_query(generate_queries("train", 1, seed=3, families=["verified_calc"])[0])
    _, context = run_agent(task, oracle_decider())
    needs = [
        sorted(k[len("need=") :] for k in d.features if k.startswith("need=")) for d in context.decisions
    ]
    assert needs == [["combine", "verify"], ["verify"], ["nothing"]]


def test_features_hide_entities_numbers_and_phrasing():
    for d in _oracle_decisions("heldout", 33):
        for key in d.features:
            assert not re.search(r"\d\d", key), key
            assert not any(name.lower() in key.lower() for name in knowledge.KNOWLEDGE_BASE), key


# --------------------------------------------------------------------------------------------------
# The agent


def test_wrong_tool_fails_and_the_run_goes_on():
    task = task_from_query(generate_queries("train", 1, seed=1, families=["arithmetic"])[0])
    result, context = run_agent(task, scripted("verify", "kb_lookup", "calculator"))
    assert result.success and result.termination == "completed"
    progress = [next(k for k in d.features if k.startswith("progress=")) for d in context.decisions]
    assert progress == ["progress=0", "progress=0", "progress=0", "progress=1"]
    assert result.detail == "verify > kb_lookup > calculator > answer"


def test_a_wrong_successful_tool_spoils_the_answer():
    task = task_from_query(generate_queries("train", 1, seed=1, families=["kb_fact"])[0])
    result, _ = run_agent(task, scripted("kb_lookup", "reverse_text"))
    assert not result.success and result.final_result and result.score == 0.0


def test_max_steps_is_honoured():
    task = task_from_query(generate_queries("train", 1, seed=2, families=["multi_hop_convert"])[0])
    result, context = run_agent(task, oracle_decider(), max_steps=2)
    assert result.termination == "max_steps" and not result.success and len(context.decisions) == 2
    never_answers = scripted(*["kb_lookup"] * 20)
    result, context = run_agent(task, never_answers)
    assert result.termination == "max_steps" and len(context.decisions) == DEFAULT_MAX_STEPS


def test_simulated_usage_is_reported_as_simulated():
    task = task_from_query(generate_queries("train", 1, seed=2, families=["multi_hop"])[0])
    options = ToolbenchOptions(tokens_per_step=100, model="sim-model")
    result, context = run_agent(task, oracle_decider(), options=options)
    steps = len(context.decisions)
    assert result.success and steps == 4
    assert context.usage.simulated
    assert context.usage.input_tokens == 75 * steps and context.usage.output_tokens == 25 * steps
    assert context.usage_model == "sim-model"
    _, quiet = run_agent(task, oracle_decider())
    assert quiet.usage.input_tokens == 0 and not quiet.usage.simulated


def test_step_latency_is_honoured():
    task = task_from_query(generate_queries("train", 1, seed=2, families=["arithmetic"])[0])
    started = time.perf_counter()
    result, context = run_agent(task, oracle_decider(), options=ToolbenchOptions(step_latency_seconds=0.02))
    assert result.success and len(context.decisions) == 2
    assert time.perf_counter() - started >= 0.04


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"step_latency_seconds": -1.0}, "step_latency_seconds"),
        ({"step_latency_seconds": float("nan")}, "step_latency_seconds"),
        ({"tokens_per_step": -5}, "tokens_per_step"),
        ({"task_families": ("poetry",)}, "task_families"),
        ({"model": ""}, "model"),
    ],
)
def test_options_reject_bad_values(kwargs, field):
    with pytest.raises(InvalidArgument) as info:
        ToolbenchOptions(**kwargs)
    assert info.value.field == field


def test_options_keep_the_families_given():
    assert ToolbenchOptions().task_families == ()
    assert ToolbenchOptions(task_families=["kb_fact"]).task_families == ("kb_fact",)


def test_trajectory_recorded_with_decisions_steps_tool_calls_and_usage(tmp_path):
    task = task_from_query(generate_queries("heldout", 1, seed=6, families=["multi_hop_convert"])[0])
    path = tmp_path / "run.json"
    recorder = TrajectoryRecorder(path, query_id=task.query_id)
    recorder.start_recording(task.text, "toolbench", "toolbench-sim", DEFAULT_MAX_STEPS)
    options = ToolbenchOptions(tokens_per_step=40)
    result, context = run_agent(task, oracle_decider(), recorder=recorder, options=options)
    recorder.finalize_recording(bool(result.success), result.final_result)
    assert result.success
    document = json.loads(path.read_text())
    steps = document["agent_steps"]
    assert [s["step_number"] for s in steps] == [1, 2, 3, 4, 5]
    assert [s["tool_calls"][0]["name"] for s in steps] == [*SOLUTIONS["multi_hop_convert"], ANSWER]
    assert all(s["tool_results"][0]["success"] and s["timestamp"] for s in steps)
    assert steps[0]["tool_calls"][0]["arguments"]["attribute"] == "height"
    assert steps[-1]["state"] == "completed" and steps[-1]["tool_results"][0]["result"] == result.final_result
    first_state = json.loads(steps[0]["llm_messages"][0]["content"])["state"]
    assert first_state["intent"] == "multi_hop_convert" and first_state["progress"] == 0
    interactions = document["llm_interactions"]
    assert len(interactions) == 5
    assert all(i["response"]["content"].startswith("[simulated]") for i in interactions)
    assert all(i["response"]["usage"]["simulated"] is True for i in interactions)
    trajectory = recorder.trajectory
    assert [d.chosen for d in trajectory.decisions] == [d.chosen for d in context.decisions]
    assert [d.step_number for d in trajectory.decisions] == [1, 2, 3, 4, 5]
    assert trajectory.total_usage.input_tokens == 30 * 5
    assert all(d.features for d in trajectory.decisions)
