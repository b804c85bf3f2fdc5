"""The generated CRDs: no drift from the models, structural, documented, well named."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from sentient_operator.api import crdgen
from sentient_operator.api import v1alpha1 as api
from tests.support.api_cases import EXAMPLE_RESOURCES, INVALID, Invalid

REPO = Path(__file__).resolve().parents[1]
KIND_IDS = [k.kind for k in crdgen.KINDS]


def _crd(k: crdgen.Kind) -> dict[str, Any]:
    return yaml.safe_load((REPO / "crds" / k.crd_file).read_text())


def _schema(k: crdgen.Kind) -> dict[str, Any]:
    schema: dict[str, Any] = _crd(k)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def _nodes(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, schema
    for name, sub in schema.get("properties", {}).items():
        yield from _nodes(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from _nodes(schema["items"], path + "[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _nodes(schema["additionalProperties"], path + ".*")


# --------------------------------------------------------------------------- drift


def test_generated_files_match_the_models() -> None:
    """Fails when a model changed without `make crds`, or a generated file was edited by hand."""
    stale = crdgen.drift(REPO)
    assert stale == [], f"run `make crds`: stale {[str(p) for p in stale]}"


@pytest.mark.parametrize("k", crdgen.KINDS, ids=KIND_IDS)
def test_chart_copies_are_identical(k: crdgen.Kind) -> None:
    assert (REPO / crdgen.CHART_CRDS / k.crd_file).read_text() == (REPO / "crds" / k.crd_file).read_text()


def test_output_is_deterministic() -> None:
    assert crdgen.render() == crdgen.render()


def test_check_mode_exits_1_on_drift(tmp_path: Path) -> None:
    crdgen.main(["--root", str(tmp_path)], out=lambda _: None)
    assert crdgen.main(["--check", "--root", str(tmp_path)], out=lambda _: None) == 0
    target = tmp_path / "crds" / crdgen.KINDS[0].crd_file
    target.write_text(target.read_text() + "# edited\n")
    lines: list[str] = []
    assert crdgen.main(["--check", "--root", str(tmp_path)], out=lines.append) == 1
    assert lines == [f"stale: crds/{crdgen.KINDS[0].crd_file} (run `make crds`)"]


def test_only_generated_files_in_crd_dirs() -> None:
    expected = {k.crd_file for k in crdgen.KINDS}
    assert {p.name for p in (REPO / "crds").iterdir()} == expected
    assert {p.name for p in (REPO / crdgen.CHART_CRDS).iterdir()} == expected


# --------------------------------------------------------------------------- structural schema


@pytest.mark.parametrize("k", crdgen.KINDS, ids=KIND_IDS)
def test_schema_is_structural(k: crdgen.Kind) -> None:
    for path, node in _nodes(_schema(k)):
        for forbidden in (
            "$ref",
            "anyOf",
            "oneOf",
            "allOf",
            "not",
            "nullable",
            "title",
            "definitions",
            "$defs",
        ):
            assert forbidden not in node, f"{k.kind}{path}: {forbidden}"
        # int-or-string (resource quantities) is the one structural node without a type.
        assert "type" in node or node.get(crdgen.INT_OR_STRING), f"{k.kind}{path}: no type"
        if node.get(crdgen.PRESERVE):
            # Only the free-form Pod-spec pieces may keep unknown fields.
            assert path.split(".")[-1].rstrip("[]") in {
                "valueFrom",
                "tolerations",
                "affinity",
                "kopf",
            }, path
        if node.get("type") == "object" and path.count(".") > 0 and not node.get(crdgen.PRESERVE):
            assert "properties" in node or "additionalProperties" in node or path == ".metadata", path


@pytest.mark.parametrize("k", crdgen.KINDS, ids=KIND_IDS)
def test_every_field_has_a_description(k: crdgen.Kind) -> None:
    missing = [
        path
        for path, node in _nodes(_schema(k))
        if path not in ("", ".metadata", ".metadata.name")
        and not path.endswith(("[]", ".*"))
        and not node.get("description")
    ]
    assert missing == []


@pytest.mark.parametrize("k", crdgen.KINDS, ids=KIND_IDS)
def test_strings_and_lists_in_cel_rules_are_bounded(k: crdgen.Kind) -> None:
    """The apiserver prices CEL rules by the largest input; unbounded inputs make it refuse them."""
    for path, node in _nodes(_schema(k)):
        rules = " ".join(r["rule"] for r in node.get("x-kubernetes-validations", []))
        if not rules:
            continue
        if node["type"] in ("array", "object") and "self.all(" in rules:
            inputs = [(path, node)]
        else:
            inputs = [
                (f"{path}.{n}", sub) for n, sub in node.get("properties", {}).items() if f"self.{n}" in rules
            ]
        for in_path, in_node in inputs:
            for sub_path, sub in _nodes(in_node, in_path):
                if sub.get("type") == "string" and "enum" not in sub:
                    assert "maxLength" in sub, sub_path
                if sub.get("type") == "array":
                    assert "maxItems" in sub, sub_path
                if sub.get("type") == "object" and isinstance(sub.get("additionalProperties"), dict):
                    assert "maxProperties" in sub, sub_path


@pytest.mark.parametrize("k", crdgen.KINDS, ids=KIND_IDS)
def test_cel_messages_name_the_field(k: crdgen.Kind) -> None:
    for path, node in _nodes(_schema(k)):
        for rule in node.get("x-kubernetes-validations", []):
            assert rule["message"].split(":")[0].startswith(("spec.", "metadata.")), (path, rule)
            assert set(rule) == {"rule", "message"}


def test_conditions_are_a_map_keyed_by_type() -> None:
    for k in crdgen.KINDS:
        cond = _schema(k)["properties"]["status"]["properties"]["conditions"]
        assert cond["x-kubernetes-list-type"] == "map"
        assert cond["x-kubernetes-list-map-keys"] == ["type"]
        assert set(cond["items"]["required"]) >= {"type", "status", "reason", "lastTransitionTime"}
        assert cond["items"]["properties"]["status"]["enum"] == ["True", "False", "Unknown"]


def test_list_map_keys_are_required() -> None:
    for k in crdgen.KINDS:
        for path, node in _nodes(_schema(k)):
            if node.get("x-kubernetes-list-type") == "map":
                assert set(node["x-kubernetes-list-map-keys"]) <= set(node["items"]["required"]), path


def test_defaults_are_valid_against_the_models() -> None:
    """A default object in the CRD parses as its model, so the apiserver and pydantic agree."""
    spec = _schema(crdgen.KINDS[1])["properties"]["spec"]["properties"]
    assert api.Timeouts.model_validate(spec["timeouts"]["default"]) == api.Timeouts()
    assert api.RetryPolicy.model_validate(spec["retry"]["default"]) == api.RetryPolicy()
    assert api.CircuitBreaker.model_validate(spec["circuitBreaker"]["default"]) == api.CircuitBreaker()


# --------------------------------------------------------------------------- names, subresources, columns


def test_names() -> None:
    for k in crdgen.KINDS:
        names = _crd(k)["spec"]["names"]
        assert names["categories"] == ["sentient"]
        assert names["plural"] == k.plural and names["singular"] == k.kind.lower()
        assert _crd(k)["spec"]["scope"] == "Namespaced"
        for short in names["shortNames"]:
            assert short not in crdgen.BUILTIN_SHORT_NAMES, short
    assert "sa" not in {s for k in crdgen.KINDS for s in k.short_names}
    all_short = [s for k in crdgen.KINDS for s in k.short_names]
    assert len(all_short) == len(set(all_short))


def test_subresources() -> None:
    by_kind = {k.kind: _crd(k)["spec"]["versions"][0] for k in crdgen.KINDS}
    for version in by_kind.values():
        assert version["subresources"]["status"] == {}
        assert version["served"] and version["storage"]
    assert by_kind["SentientAgent"]["subresources"]["scale"] == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }
    assert "scale" not in by_kind["LLMProvider"]["subresources"]


@pytest.mark.parametrize(
    ("kind", "columns"),
    [
        ("SentientAgent", ["Ready", "Replicas", "Providers", "Primary", "Endpoint", "Age"]),
        ("LLMProvider", ["Type", "Synced", "Ready", "Endpoint", "Age"]),
        # Ready (its Redis Secrets exist) and how many agents use it, as kubectl get shows the others.
        ("RateLimitPolicy", ["Ready", "Backend", "CountBy", "Agents", "Age"]),
    ],
)
def test_printer_columns(kind: str, columns: list[str]) -> None:
    k = next(k for k in crdgen.KINDS if k.kind == kind)
    cols = _crd(k)["spec"]["versions"][0]["additionalPrinterColumns"]
    assert [c["name"] for c in cols] == columns
    schema = _schema(k)
    for col in cols:
        if col["jsonPath"].startswith((".spec.", ".status.")) and "[" not in col["jsonPath"]:
            node = schema
            for part in col["jsonPath"].strip(".").split("."):
                node = node["properties"][part]
            assert node["type"] == col["type"] or (col["type"] == "string"), col


# --------------------------------------------------------------------------- editor schemas and reference


@pytest.mark.parametrize(("name", "doc"), EXAMPLE_RESOURCES, ids=[n for n, _ in EXAMPLE_RESOURCES])
def test_examples_validate_against_editor_schemas(name: str, doc: dict[str, Any]) -> None:
    schema = json.loads((REPO / "schemas" / f"{doc['kind'].lower()}.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    errors = [error.message for error in jsonschema.Draft7Validator(schema).iter_errors(doc)]
    assert errors == []


def test_combined_editor_schema_checks_only_sentient_documents() -> None:
    schema = json.loads((REPO / "schemas" / "sentient.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    validator = jsonschema.Draft7Validator(schema)
    for path in sorted((REPO / "examples").glob("*.yaml")):
        assert path.read_text().startswith("# yaml-language-server: $schema=../schemas/sentient.json\n"), path
        for doc in yaml.safe_load_all(path.read_text()):
            assert not list(validator.iter_errors(doc)), (path, doc.get("kind"))
    bad = INVALID[0].obj()
    bad["spec"]["typo"] = 1
    assert list(validator.iter_errors(bad))


@pytest.mark.parametrize(
    "case",
    [c for c in INVALID if c.expect.startswith("spec.") and ":" not in c.expect],
    ids=lambda c: c.id,
)
def test_editor_schemas_flag_schema_level_errors(case: Invalid) -> None:
    """Field-level mistakes (not the cross-field CEL rules) show in the editor too."""
    obj = case.obj()
    schema = json.loads((REPO / "schemas" / f"{obj['kind'].lower()}.json").read_text())
    errors = list(jsonschema.Draft7Validator(schema).iter_errors(obj))
    assert errors, case.id


@pytest.mark.parametrize("k", crdgen.KINDS, ids=KIND_IDS)
def test_reference_documents_every_field(k: crdgen.Kind) -> None:
    page = (REPO / "docs" / "reference" / f"{k.singular}.md").read_text()
    for path, _ in _nodes(_schema(k)["properties"]["spec"], "spec"):
        if path.endswith(("[]", ".*")):
            continue
        assert f"`{path}`" in page, path
    for node_path, node in _nodes(_schema(k)):
        for rule in node.get("x-kubernetes-validations", []):
            assert rule["message"].replace("|", "\\|") in page, node_path
