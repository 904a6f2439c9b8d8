"""libxml2's XSD complaints, turned into :class:`FieldError` with a local-name XPath and Vietnamese text.

Only runs when a document fails its schema, so it may take its time (it resolves each complaint's node).
"""

from __future__ import annotations

import re

from lxml import etree

from docbus.errors import FieldError
from docbus.validation.paths import element_path, local_name

_ELEMENT = re.compile(r"^Element '([^']+)'(?:, attribute '([^']+)')?: ")
# "{namespace-uri}" before element names; pattern facets such as [0-9]{4} must survive.
_CLARK = re.compile(r"\{[A-Za-z][A-Za-z0-9+.-]*:[^}]*\}")
_EXPECTED = re.compile(r"Expected is (?:one of )?\( ([^)]*) \)")
_LENGTH = re.compile(r"length of '(\d+)'; this (?:exceeds|underruns) the allowed (?:maximum|minimum) length of '(\d+)'")
_VALUE = re.compile(r"The value '([^']*)'")
_SET = re.compile(r"the set \{([^}]*)\}")
_BOUND = re.compile(r"(?:maximum|minimum) value allowed \('([^']*)'\)")
_ATOMIC = re.compile(r"'([^']*)' is not a valid value of the (?:local )?(?:atomic|list|union) type '([^']+)'")

# Patterns in our XSD, said the way people write them.
_PATTERN_NAMES = {
    "[0-9]{4}/(0[1-9]|1[0-2])/(0[1-9]|[12][0-9]|3[01])": "yyyy/MM/dd",
    "([0-9]{4}/(0[1-9]|1[0-2])/(0[1-9]|[12][0-9]|3[01]))?": "yyyy/MM/dd or empty",
    "[0-9]{4}/(0[1-9]|1[0-2])/(0[1-9]|[12][0-9]|3[01]) ([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]": (
        "yyyy/MM/dd HH:mm:ss"
    ),
    "[0-9]{2}": "two digits",
}
_TYPE_NAMES = {
    "xs:integer": ("an integer", "số nguyên"),
    "xs:nonNegativeInteger": ("a whole number ≥ 0", "số nguyên không âm"),
    "xs:boolean": ("true or false", "true hoặc false"),
}


_XS = "{http://www.w3.org/2001/XMLSchema}"


def required_children(xsd: etree._Element) -> dict[str, frozenset[str]]:
    """For each element name in an XSD, the child elements its content model requires.

    libxml2 answers a missing child in an ``xs:all`` with every child still allowed ("Expected is one of
    ( OrganId, OrganName, Email, ... )"); this tells which of those are actually missing.
    """
    types = {node.get("name"): node for node in xsd.iterchildren(f"{_XS}complexType")}
    found: dict[str, set[str]] = {}
    for element in xsd.iter(f"{_XS}element"):
        name, type_name = element.get("name"), element.get("type")
        if not name:
            continue
        complex_type = types.get(type_name.partition(":")[2]) if type_name else element.find(f"{_XS}complexType")
        if complex_type is None:
            continue
        for group in complex_type.iterchildren(f"{_XS}all", f"{_XS}sequence"):
            found.setdefault(name, set()).update(
                str(child.get("name"))
                for child in group.iterchildren(f"{_XS}element")
                if child.get("name") and child.get("minOccurs", "1") != "0"
            )
    return {name: frozenset(children) for name, children in found.items()}


def schema_complaints(
    error_log: etree._ListErrorLog,
    tree: etree._ElementTree,
    limit: int,
    required: dict[str, frozenset[str]] | None = None,
) -> list[FieldError]:
    """:class:`FieldError` for each schema error, in document order, at most ``limit``.

    ``required`` (from :func:`required_children`) lets a missing child be named precisely.
    """
    namespaces = _prefixes(tree)
    complaints: list[FieldError] = []
    facet_lines: set[tuple[int, str]] = set()
    for entry in error_log:
        message = entry.message
        if "is not a valid value of the" in message and (entry.line, entry.path) in facet_lines:
            continue  # libxml2 may repeat a facet failure as a type failure of the same value
        if "[facet '" in message:
            facet_lines.add((entry.line, entry.path))
        complaints.extend(_complaints(entry, message, _resolve(tree, entry.path, namespaces), required or {}))
        if len(complaints) >= limit:
            break
    return complaints[:limit]


def _prefixes(tree: etree._ElementTree) -> dict[str, str]:
    namespaces: dict[str, str] = {}
    for element in tree.iter(tag=etree.Element):
        for prefix, uri in element.nsmap.items():
            if prefix:
                namespaces.setdefault(prefix, uri)
    return namespaces


def _resolve(tree: etree._ElementTree, libxml_path: str | None, namespaces: dict[str, str]) -> str:
    if not libxml_path:
        return "/"
    try:
        found = tree.xpath(libxml_path, namespaces=namespaces)
    except etree.XPathError:
        found = None
    if isinstance(found, list) and len(found) == 1 and isinstance(found[0], etree._Element):
        return element_path(found[0])
    return _CLARK.sub("", libxml_path)


def _complaints(
    entry: etree._LogEntry, message: str, path: str, required: dict[str, frozenset[str]]
) -> list[FieldError]:
    match = _ELEMENT.match(message)
    element = local_name(match[1]) if match else ""
    attribute = match[2] if match else None
    detail = _CLARK.sub("", message[match.end() :] if match else message).strip()
    line = entry.line or None
    en = f"{element}: {detail}" if element else detail
    rule, vi, expected = "xsd", f"Phần tử {element} không hợp lệ theo lược đồ: {detail}", None

    if "Missing child element(s)" in detail:
        names = _expected_names(detail)
        rule = "required"
        missing = [name for name in names if name in required.get(element, ())]
        if missing and len(names) > 1:
            return [
                FieldError(
                    path=f"{path}/{name}",
                    rule=rule,
                    message_en=f"Missing required element {name} in {element}",
                    message_vi=f"Thiếu phần tử bắt buộc {name} trong {element}",
                    line=line,
                    expected=name,
                )
                for name in missing
            ]
        if len(names) == 1:
            path = f"{path}/{names[0]}"
            en = f"Missing required element {names[0]} in {element}"
            vi = f"Thiếu phần tử bắt buộc {names[0]} trong {element}"
        else:
            en = f"Missing required element in {element}: one of {', '.join(names)}"
            vi = f"Thiếu phần tử bắt buộc trong {element}: một trong {', '.join(names)}"
        expected = ", ".join(names) or None
    elif "This element is not expected" in detail:
        names = _expected_names(detail)
        rule = "unexpected-element"
        en = f"Element {element} is not allowed here"
        vi = f"Phần tử {element} không được phép ở vị trí này"
        if names:
            expected = ", ".join(names)
            en += f"; expected {expected}"
            vi += f"; cần {expected}"
    elif "[facet 'maxLength']" in detail and (length := _LENGTH.search(detail)):
        rule, expected = "max-length", f"at most {length[2]} characters"
        en = f"{element} has {length[1]} characters; at most {length[2]} are allowed"
        vi = f"{element} dài {length[1]} ký tự, vượt quá giới hạn {length[2]} ký tự"
    elif "[facet 'minLength']" in detail and (length := _LENGTH.search(detail)):
        rule, expected = "min-length", f"at least {length[2]} characters"
        if length[2] == "1":
            en, vi = f"{element} must not be empty", f"{element} không được để trống"
        else:
            en = f"{element} has {length[1]} characters; at least {length[2]} are required"
            vi = f"{element} chỉ có {length[1]} ký tự, cần ít nhất {length[2]} ký tự"
    elif "[facet 'pattern']" in detail:
        value = _value(detail)
        pattern = detail.rsplit("pattern '", 1)[-1].rstrip("'.")
        expected = _PATTERN_NAMES.get(pattern, pattern)
        rule = "pattern"
        en = f"{element} value '{value}' is not in the form {expected}"
        vi = f"Giá trị '{value}' của {element} không đúng định dạng {expected}"
    elif "[facet 'enumeration']" in detail:
        allowed = _SET.search(detail)
        rule, expected = "enumeration", allowed[1].replace("'", "") if allowed else ""
        en = f"{element} value '{_value(detail)}' is not one of {expected}"
        vi = f"Giá trị '{_value(detail)}' của {element} không thuộc các giá trị cho phép: {expected}"
    elif "[facet 'maxInclusive']" in detail or "[facet 'minInclusive']" in detail:
        found = _BOUND.search(detail)
        bound = found[1] if found else "?"
        high = "maxInclusive" in detail
        rule = "range"
        expected = f"{'at most' if high else 'at least'} {bound}"
        en = f"{element} value '{_value(detail)}' must be {expected}"
        vi = f"Giá trị '{_value(detail)}' của {element} phải {'không lớn hơn' if high else 'không nhỏ hơn'} {bound}"
    elif atomic := _ATOMIC.search(detail):
        what_en, what_vi = _TYPE_NAMES.get(atomic[2], (atomic[2], atomic[2]))
        rule, expected = "type", what_en
        en = f"{element} value '{atomic[1]}' is not {what_en}"
        vi = f"Giá trị '{atomic[1]}' của {element} phải là {what_vi}"
    elif "Character content other than whitespace" in detail:
        rule = "unexpected-text"
        en = f"{element} may hold only elements, not text"
        vi = f"Phần tử {element} chỉ được chứa phần tử con, không được chứa văn bản"
    elif attribute is not None and "is not allowed" in detail:
        rule = "unexpected-attribute"
        path = f"{path}/@{attribute}"
        en = f"Attribute {attribute} is not allowed on {element}"
        vi = f"Thuộc tính {attribute} không được phép trên {element}"

    return [FieldError(path=path, rule=rule, message_en=en, message_vi=vi, line=line, expected=expected)]


def _expected_names(detail: str) -> list[str]:
    match = _EXPECTED.search(detail)
    if match is None:
        return []
    return [local_name(name.strip()) for name in match[1].split(",") if name.strip()]


def _value(detail: str) -> str:
    match = _VALUE.search(detail)
    value = match[1] if match else ""
    return value if len(value) <= 60 else value[:59] + "…"
