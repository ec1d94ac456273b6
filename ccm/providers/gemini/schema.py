"""Tool input schemas (JSON Schema, as Claude Code writes them) cleaned into the OpenAPI subset Gemini's legacy
`functionDeclarations[].parameters` accepts (PROTOCOL §7).

Gemini rejects the whole request for one key it does not know (`Invalid JSON payload received. Unknown name "X"`),
so every node is rebuilt from an allow-list rather than filtered by a deny-list. The rules, each from a rejection
seen in the wild:
- only the allow-listed keywords survive; `$ref` is inlined from `$defs`/`definitions` (a cycle becomes a plain
  object), `allOf` is merged, `oneOf` is read as `anyOf`;
- `type` is a single name: `[T, "null"]` and `anyOf: [..., {type: "null"}]` become `nullable: true`, other unions
  become `anyOf`, a missing type is inferred from the keywords present;
- `properties`/`required` only on objects, `required` only naming declared properties, and never an empty
  `properties` map ("should be non-empty for OBJECT type"): a free-form object (a map, `additionalProperties`) is
  sent as a bare object;
- arrays always have `items`; `enum` only on strings (`const` becomes a one-value enum; other enums move into the
  description); `format` only `enum` or `date-time`; `exclusiveMinimum/Maximum` become inclusive bounds.
A tool whose input takes no parameters gets no `parameters` at all (an empty object schema is rejected too).
"""

from __future__ import annotations

from typing import Any

_TYPES = frozenset({"string", "number", "integer", "boolean", "array", "object"})
_NUMERIC = ("minimum", "maximum")
_FORMATS = frozenset({"enum", "date-time"})


def clean_parameters(schema: Any) -> dict[str, Any] | None:
    """The `parameters` for a function declaration, or None when the tool takes no parameters."""
    if not isinstance(schema, dict):
        return None
    cleaned = _Cleaner(schema).clean(schema, ())
    if cleaned.get("type") != "object" or not cleaned.get("properties"):
        return None
    cleaned.pop("nullable", None)
    return cleaned


class _Cleaner:
    def __init__(self, root: dict[str, Any]) -> None:
        self.definitions: dict[str, Any] = {}
        for key in ("definitions", "$defs"):
            defs = root.get(key)
            if isinstance(defs, dict):
                self.definitions.update({f"#/{key}/{name}": value for name, value in defs.items()})

    def clean(self, node: Any, refs: tuple[str, ...]) -> dict[str, Any]:
        if not isinstance(node, dict):
            return {"type": "object"}  # `true` / non-schema: anything goes, and an object is the loosest we can say
        node, refs = self._resolve(node, refs)
        node = _merge_all_of(node)
        out: dict[str, Any] = {}
        for key in ("title", "description"):
            if isinstance(node.get(key), str):
                out[key] = node[key]

        nullable, types = _types(node)
        union = node.get("anyOf", node.get("oneOf"))
        if isinstance(union, list) and union:
            branches = [b for b in union if not (isinstance(b, dict) and b.get("type") == "null")]
            nullable = nullable or len(branches) < len(union)
            if len(branches) == 1:
                merged = self.clean(branches[0], refs)
                merged.update(out)  # the outer description wins over the branch's
                out = merged
            elif branches:
                out["anyOf"] = [self.clean(b, refs) for b in branches]
            if nullable:
                out["nullable"] = True
            return out

        if len(types) > 1:
            out["anyOf"] = [self._typed(node, t, refs, {}) for t in types]
            if nullable:
                out["nullable"] = True
            return out
        kind = types[0] if types else _infer_type(node)
        out = self._typed(node, kind, refs, out)
        if nullable:
            out["nullable"] = True
        return out

    def _typed(self, node: dict[str, Any], kind: str, refs: tuple[str, ...], out: dict[str, Any]) -> dict[str, Any]:
        out["type"] = kind
        if kind == "object":
            properties = node.get("properties")
            if isinstance(properties, dict) and properties:
                out["properties"] = {name: self.clean(value, refs) for name, value in properties.items()}
                required = [r for r in node.get("required", ()) if isinstance(r, str) and r in out["properties"]]
                if required:
                    out["required"] = required
            for key in ("minProperties", "maxProperties"):
                _copy_count(node, out, key)
        elif kind == "array":
            items = node.get("items")
            if isinstance(items, list):  # tuple validation: any of the listed item schemas
                items = {"anyOf": items} if items else None
            out["items"] = self.clean(items, refs) if items is not None else {"type": "string"}
            for key in ("minItems", "maxItems"):
                _copy_count(node, out, key)
        elif kind == "string":
            _string_keywords(node, out)
        elif kind in ("number", "integer"):
            _numeric_keywords(node, out)
            _enum_into_description(node, out)
        elif kind == "boolean":
            _enum_into_description(node, out)
        if "default" in node and _fits(node["default"], kind):
            out["default"] = node["default"]
        if "example" in node and _fits(node["example"], kind):
            out["example"] = node["example"]
        return out

    def _resolve(self, node: dict[str, Any], refs: tuple[str, ...]) -> tuple[dict[str, Any], tuple[str, ...]]:
        while isinstance(node.get("$ref"), str):
            ref = node["$ref"]
            target = self.definitions.get(ref)
            if ref in refs or not isinstance(target, dict):
                # A recursive (or dangling) reference: stop here with a loose object rather than loop.
                loose: dict[str, Any] = {"type": "object"}
                if isinstance(node.get("description"), str):
                    loose["description"] = node["description"]
                return loose, refs
            refs = (*refs, ref)
            siblings = {k: v for k, v in node.items() if k != "$ref"}
            node = {**target, **siblings}
        return node, refs


def _types(node: dict[str, Any]) -> tuple[bool, list[str]]:
    raw = node.get("type")
    names = raw if isinstance(raw, list) else [raw] if isinstance(raw, str) else []
    nullable = "null" in names or node.get("nullable") is True
    return nullable, [n for n in names if n in _TYPES]


def _infer_type(node: dict[str, Any]) -> str:
    if "properties" in node or "additionalProperties" in node:
        return "object"
    if "items" in node:
        return "array"
    if "enum" in node or "const" in node or "pattern" in node or "format" in node:
        return "string"
    if any(k in node for k in (*_NUMERIC, "exclusiveMinimum", "exclusiveMaximum")):
        return "number"
    return "object"


def _merge_all_of(node: dict[str, Any]) -> dict[str, Any]:
    parts = node.get("allOf")
    if not isinstance(parts, list):
        return node
    merged = {k: v for k, v in node.items() if k != "allOf"}
    for part in parts:
        if not isinstance(part, dict):
            continue
        for key, value in part.items():
            if key == "properties" and isinstance(value, dict):
                merged["properties"] = {**merged.get("properties", {}), **value}
            elif key == "required" and isinstance(value, list):
                merged["required"] = [*merged.get("required", []), *value]
            else:
                merged.setdefault(key, value)
    return merged


def _string_keywords(node: dict[str, Any], out: dict[str, Any]) -> None:
    values = node.get("enum")
    if "const" in node:
        values = [node["const"]]
    if isinstance(values, list) and values:
        strings = [v for v in values if isinstance(v, str)]
        if len(strings) == len([v for v in values if v is not None]) and strings:
            out["enum"] = strings
            if None in values:
                out["nullable"] = True
    if node.get("format") in _FORMATS:
        out["format"] = node["format"]
    if isinstance(node.get("pattern"), str):
        out["pattern"] = node["pattern"]
    for key in ("minLength", "maxLength"):
        _copy_count(node, out, key)


def _numeric_keywords(node: dict[str, Any], out: dict[str, Any]) -> None:
    for key, exclusive in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
        value = node.get(key)
        if not _is_number(value) and _is_number(node.get(exclusive)):
            value = node[exclusive]  # draft 2020-12 numeric form; the inclusive bound is the closest Gemini knows
        if _is_number(value):
            out[key] = value


def _enum_into_description(node: dict[str, Any], out: dict[str, Any]) -> None:
    values = [node["const"]] if "const" in node else node.get("enum")
    if isinstance(values, list) and values:
        allowed = ", ".join(str(v) for v in values)
        out["description"] = (f"{out['description']} (one of: {allowed})" if "description" in out
                              else f"One of: {allowed}")


def _copy_count(node: dict[str, Any], out: dict[str, Any], key: str) -> None:
    value = node.get(key)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        out[key] = value


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _fits(value: Any, kind: str) -> bool:
    return {
        "string": isinstance(value, str),
        "number": _is_number(value),
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "boolean": isinstance(value, bool),
        "array": isinstance(value, list),
        "object": isinstance(value, dict),
    }[kind]
