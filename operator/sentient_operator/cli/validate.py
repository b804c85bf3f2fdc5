"""Offline validation of manifests with the same models the CRDs are generated from."""

from __future__ import annotations

import base64
import re
from pathlib import Path as FsPath

import yaml
from pydantic import BaseModel, ValidationError

from agent_runtime.placeholders import is_placeholder
from sentient_operator.api import v1alpha1
from sentient_operator.cli.advisories import all_warnings
from sentient_operator.cli.problems import Problem
from sentient_operator.cli.yamlpos import Document, load_documents

RESOURCE_MODELS: dict[str, type[BaseModel]] = dict(v1alpha1.RESOURCE_CLASSES)
_PATH_PREFIX = re.compile(r"^((?:metadata|spec|status)(?:\.[A-Za-z0-9_\[\]]+)*): (.*)$", re.S)
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def _dotted(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def validate_document(doc: Document, file: str, *, placeholders: bool = True) -> list[Problem]:
    """Problems of one YAML document; custom resources of ours are checked field by field.

    ``placeholders=False`` lets Secret values that are placeholders pass (``sentient dev`` takes
    such keys from the environment instead).
    """
    data = doc.data
    if not isinstance(data, dict):
        return [Problem(file, doc.start_line, "(document)", "expected a mapping with apiVersion and kind")]
    problems: list[Problem] = []
    for key in ("apiVersion", "kind"):
        if not isinstance(data.get(key), str) or not data[key]:
            problems.append(Problem(file, doc.start_line, key, "required"))
    metadata = data.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    if not isinstance(name, str) or not _DNS_SUBDOMAIN.match(name) or len(name) > 253:
        problems.append(
            Problem(
                file, doc.line_of(("metadata", "name")), "metadata.name", "required: a DNS subdomain name"
            )
        )
    kind = data.get("kind")
    if placeholders and kind == "Secret" and data.get("apiVersion") == "v1":
        problems.extend(_placeholder_values(doc, file))
    if kind not in RESOURCE_MODELS:
        return problems
    # The kind's own name rule, checked here as well as in the model: the model's whole-object
    # check runs only when every field is valid, and the API server reports it in any case.
    name_rule = _name_rule(str(kind), name)
    if name_rule is not None:
        problems.append(Problem(file, doc.line_of(("metadata", "name")), "metadata.name", name_rule))
    if data.get("apiVersion") != v1alpha1.API_VERSION:
        problems.append(
            Problem(
                file,
                doc.line_of(("apiVersion",)),
                "apiVersion",
                f"must be {v1alpha1.API_VERSION} for kind {kind}",
            )
        )
    if data.get("spec") is None:
        problems.append(Problem(file, doc.start_line, "spec", "required"))
        return problems
    try:
        v1alpha1.validate_wire(RESOURCE_MODELS[str(kind)], data)
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            loc: tuple[str | int, ...] = tuple(err["loc"])
            if loc and loc[0] in ("apiVersion", "kind"):
                continue  # reported above with a clearer message
            msg = err["msg"].removeprefix("Value error, ")
            # Cross-field rules raise at the object level with the field path
            # leading the message (the same text the CEL rule gives); point at it.
            named = _PATH_PREFIX.match(msg)
            if named:
                path = named.group(1)
                parts = path.replace("[", ".").replace("]", "").split(".")
                loc = tuple(int(p) if p.isdigit() else p for p in parts)
                problems.append(Problem(file, doc.line_of(loc), path, named.group(2)))
                continue
            problems.append(Problem(file, doc.line_of(loc), _dotted(loc), msg))
    return list(dict.fromkeys(problems))  # the name rule may come twice (here and from the model)


def _placeholder_values(doc: Document, file: str) -> list[Problem]:
    """A Secret value left as a template's placeholder: it would work as a key, or fail upstream."""
    problems: list[Problem] = []
    for field_name in ("stringData", "data"):
        values = doc.data.get(field_name)
        if not isinstance(values, dict):
            continue
        for key, value in values.items():
            if not isinstance(value, str):
                continue
            text = value
            if field_name == "data":
                try:
                    text = base64.b64decode(value, validate=True).decode()
                except (ValueError, UnicodeDecodeError):
                    continue
            if is_placeholder(text):
                problems.append(
                    Problem(
                        file,
                        doc.line_of((field_name, key)),
                        f"{field_name}.{key}",
                        "is a placeholder: put the real value here, or leave this Secret out of the file "
                        "and create it with `kubectl create secret generic ...`",
                    )
                )
    return problems


def _name_rule(kind: str, name: object) -> str | None:
    """The message of the kind-specific ``metadata.name`` rule that ``name`` breaks, if any."""
    if not isinstance(name, str):
        return None
    if kind == "SentientAgent" and (len(name) > 63 or not re.fullmatch(v1alpha1.AGENT_NAME_PATTERN, name)):
        return v1alpha1.AGENT_NAME_MESSAGE.removeprefix("metadata.name: ")
    if kind == "LLMProvider" and len(name) > v1alpha1.PROVIDER_NAME_MAX:
        return v1alpha1.PROVIDER_NAME_MESSAGE.removeprefix("metadata.name: ")
    return None


def _check_text(text: str, file: str, *, placeholders: bool = True) -> tuple[list[Document], list[Problem]]:
    try:
        docs = load_documents(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        return [], [Problem(file, line, "(yaml)", str(getattr(exc, "problem", None) or exc))]
    problems: list[Problem] = []
    for doc in docs:
        problems.extend(validate_document(doc, file, placeholders=placeholders))
    return docs, problems


def validate_text(text: str, file: str, *, placeholders: bool = True) -> tuple[int, list[Problem]]:
    """Validate every document in a YAML stream; returns (documents checked, problems)."""
    docs, problems = _check_text(text, file, placeholders=placeholders)
    return len(docs), problems


def check_files(paths: list[str]) -> tuple[int, list[Problem], list[Problem]]:
    """Validate files; returns (documents checked, problems, warnings).

    Warnings (``advisories.py``) look across every file given, so that an agent and the
    RateLimitPolicy it names may sit in different files; they never fail validation.
    """
    problems: list[Problem] = []
    documents: list[tuple[Document, str]] = []
    for path in paths:
        try:
            text = FsPath(path).read_text()
        except OSError as exc:
            problems.append(Problem(path, 0, "(file)", exc.strerror or str(exc)))
            continue
        docs, found = _check_text(text, path)
        documents.extend((doc, path) for doc in docs)
        problems.extend(found)
    return len(documents), problems, all_warnings(documents)


def validate_files(paths: list[str]) -> tuple[int, list[Problem]]:
    """Validate files; returns (documents checked, problems)."""
    count, problems, _ = check_files(paths)
    return count, problems
