"""Where a complaint points: XPath for XML elements, JSON pointer for JSON values.

XPaths use local names (``/edXML/edXMLEnvelope/edXMLHeader/MessageHeader/To[2]/OrganId``) because agencies'
systems write the same elements with and without the ``edXML:`` prefix; a step carries a position only when
its parent has more than one child of that name, as libxml2 writes them.
"""

from __future__ import annotations

from collections.abc import Iterable

from lxml import etree


def local_name(tag: str) -> str:
    """``{namespace}Name`` → ``Name``."""
    return tag.rpartition("}")[2]


def line_of(element: etree._Element) -> int | None:
    """The element's line in the body (typed here: the lxml stubs leave ``sourceline`` untyped)."""
    line: object = element.sourceline
    return line if isinstance(line, int) else None


def element_path(element: etree._Element) -> str:
    """The XPath of an element, by local names, positions only where needed."""
    steps: list[str] = []
    node: etree._Element | None = element
    while node is not None:
        name = local_name(node.tag)
        parent = node.getparent()
        if parent is not None:
            same = [sibling for sibling in parent.iterchildren(node.tag)]
            if len(same) > 1:
                name = f"{name}[{same.index(node) + 1}]"
        steps.append(name)
        node = parent
    return "/" + "/".join(reversed(steps))


def json_pointer(parts: Iterable[str | int]) -> str:
    """RFC 6901 pointer; the empty string is the whole document."""
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in parts)
