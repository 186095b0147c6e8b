"""What a component service may put on a trader's page: one element, in a strict subset of HTML.

Every ``ui.*`` part is swapped into the page by htmx as it is parsed by the browser, so the
gateway reads it the way the browser will, and refuses what it cannot read that way:

- **One element, well formed**: the part is exactly one element, every tag closed in order
  (``input`` is void; ``rect`` and ``polyline`` close themselves inside ``svg``), no
  comment, no ``<`` in text, attribute values quoted. So there is no second element for
  htmx to swap, and none of the HTML parser's repairs (an implied end tag, a reconstructed
  formatting element, raw text) can move anything out of it.
- **Its id is the part's**, and every id inside it, and every id it names (``for``,
  ``list``, the ``aria-*`` references), carries the component's prefix: a part cannot stand
  in for another component's element or the gateway's own, nor click or label them.
- **Only the tags and attributes the components' templates use** (:data:`TAGS`,
  ``_FREE``, ``_REFS``): no script, style, link or frame, no ``on…`` handler, no ``href``,
  ``src`` or ``action``, no ``hx-swap-oob`` (the gateway adds it), ``hx-boost``, ``hx-on``,
  ``hx-headers`` or ``data-ws-*``. Of htmx's attributes, requests go only to the
  component's own event URLs (``/c/<component>/<event>``, ``/fragments/<component>``,
  exactly: no ``..``, no escapes); targets and selectors name ``this``, ``closest form``,
  ``find <tag>`` or an element of the component (htmx's ``next``/``previous`` search the
  whole page); ``hx-vals`` is JSON (never ``js:``); ``hx-trigger`` has no ``[…]`` filter,
  no ``every``, and listens ``from:`` the component only.
- **Bounded**: at most :data:`_MAX_CHARS` and :data:`_MAX_DEPTH` elements deep; every
  step is linear (it runs on the gateway's event loop).

:func:`check` answers for one part: a quick full match of one precompiled pattern for the
plain parts of a tick (no request, no form; nearly every part), else the tokenizer.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import cache
from typing import Any

from shared import wire

__all__ = ["TAGS", "check", "swappable", "with_oob"]

_SPACE = r"[\t\n\f ]"  # HTML's whitespace (a carriage return is not: refused, not guessed)
_VALUE = r"(?:\"[^\"<]*\"|'[^'<]*')"  # no "<": every "<" of a part opens a tag
_HTML_TAGS = frozenset(
    "button datalist div form h2 h3 input label li option p section select span time ul".split()
)
_SHAPES = frozenset({"rect", "polyline"})
_SVG_TAGS = frozenset({"svg"}) | _SHAPES
TAGS = _HTML_TAGS | _SVG_TAGS
_VOID = frozenset({"input"})
_PLAIN = ("div", "span", "label", "time")  # no parsing rule of their own: the quick pattern
# attributes with no effect but what they show (any value), then those checked one by one
_FREE = frozenset(
    """class role title type name value placeholder inputmode autocomplete tabindex step
    min max maxlength minlength datetime required selected checked disabled readonly
    viewBox preserveAspectRatio points x y width height aria-label aria-hidden aria-live
    aria-invalid aria-busy aria-current aria-expanded aria-pressed aria-selected aria-sort
    aria-valuenow aria-valuemin aria-valuemax aria-valuetext aria-atomic aria-disabled
    aria-required aria-level data-symbol data-component data-ticket data-ticket-focus
    data-notice data-status data-side data-optimistic data-optimistic-message""".split()
)
# attributes naming other elements by id: the component's own only (a label's "for" clicks
# the control it names, a datalist feeds the input that lists it)
_REFS = frozenset(
    """for list aria-labelledby aria-describedby aria-controls aria-owns aria-details
    aria-activedescendant aria-errormessage aria-flowto""".split()
)
_QUICK_ATTRIBUTES = """class role title aria-label aria-hidden aria-live data-symbol data-status
    data-side viewBox preserveAspectRatio points x y width height""".split()
_MAX_CHARS = 262_144  # a part or an answer: a full render is ~20 KB
_MAX_DEPTH = 128  # elements open at once (Chromium flattens past ~512)
_QUICK_DEPTH = 6
_QUICK_MAX = 2048  # a tick's parts; a full render goes straight to the tokens
_EVENT_NAME = r"[a-z_][a-z0-9_]{0,63}"
_ID_CHARS = r"[A-Za-z0-9_.:-]*+"  # possessive, as every repetition here: linear
_PHRASING = frozenset({"span", "button", "input", "label", "time", "select", "datalist", "svg"})
_FIRST_ID = re.compile(  # the first id of the first tag of a part already checked
    rf"{_SPACE}*<[a-z0-9]+"
    rf"(?:{_SPACE}+(?!id{_SPACE}*=)[^\t\n\f /=>]+(?:{_SPACE}*={_SPACE}*{_VALUE})?)*?"
    rf"{_SPACE}+id{_SPACE}*={_SPACE}*(?:\"([^\"]*)\"|'([^']*)')"
)


def _trie(words: Iterable[str]) -> str:
    """``words`` as one regular expression, factored on their common beginnings (``re``
    tries an alternation's branches one by one: this is its branches' first characters),
    a word before its own beginning (``maxlength`` before ``max``)."""
    tree: dict[str, Any] = {}
    for word in words:
        node = tree
        for char in word:
            node = node.setdefault(char, {})
        node[""] = {}

    def pattern(node: dict[str, Any]) -> str:
        branches = [re.escape(char) + pattern(rest) for char, rest in sorted(node.items()) if char]
        if "" in node:
            branches.append("")
        return branches[0] if len(branches) == 1 else f"(?:{'|'.join(branches)})"

    return pattern(tree)


_END = r"(?=[\t\n\f =/>])"  # a name ends there: "aria-label" is not "aria-labelledby"
_FREE_NAMES = _trie(_FREE) + _END
_REF_NAMES = _trie(_REFS) + _END
_QUICK_NAMES = _trie(_QUICK_ATTRIBUTES) + _END
_FREE_LOWER = frozenset(name.lower() for name in _FREE)
_CHECKED = frozenset(
    "id hx-get hx-post hx-put hx-patch hx-delete hx-target hx-select hx-include hx-swap"
    " hx-trigger hx-vals".split()
)


def check(component: str, part_id: str, html: str) -> str | None:
    """Why ``html`` may not reach a page as the part ``part_id`` of ``component``, or
    ``None``. The reasons are the gateway's drop labels: ``not an element``, ``foreign id``,
    ``active content``, ``request to a foreign URL``."""
    return swappable(component, part_id, html)[1]


_OOB = ' hx-swap-oob="true"'
_TAG_NAME = re.compile(r"[\t\n\f ]*<([A-Za-z][A-Za-z0-9-]*)")


def with_oob(html: str) -> str | None:
    """``html`` with ``hx-swap-oob="true"`` in its first tag, after its name (a part that
    :func:`check` let through has none of its own); ``None`` if it does not begin with a tag."""
    match = _TAG_NAME.match(html)
    if match is None:
        return None
    return html[match.start(1) - 1 : match.end()] + _OOB + html[match.end() :]


def swappable(component: str, part_id: str, html: str) -> tuple[str | None, str | None]:
    """``(html as the gateway sends it, None)``: with ``hx-swap-oob="true"`` in its first tag,
    if :func:`check` lets it through; else ``(None, why not)``. The hot path: every part."""
    known = _QUICK.get(component)
    if known is None:
        if component not in wire.ID_PREFIX:
            return None, "foreign id"
        own = wire.ID_PREFIX[component] + "-"
        known = _QUICK[component] = (own, _quick(own))
    own, quick = known
    if not part_id.startswith(own):
        return None, "foreign id"
    if len(html) > _MAX_CHARS:
        return None, "not an element"
    match = quick.fullmatch(html) if len(html) <= _QUICK_MAX else None
    if match is not None:
        if (match["id"] or match["id1"]) != part_id:
            return None, "foreign id"
        begin, end = match.start("t0") - 1, match.end("t0")
        return html[begin:end] + _OOB + html[end:], None
    if _lexicon(component, own).fullmatch(html) is None:
        return None, _why(component, own, html)
    if not html.strip("\t\n\f ").endswith(">"):
        return None, "not an element"  # text after the element (an answer would show it)
    reason = _structure(html)
    if reason is not None:
        return None, reason
    first = _FIRST_ID.match(html)
    if first is None or (first[1] if first[1] is not None else first[2]) != part_id:
        return None, "foreign id"
    return with_oob(html), None


_QUICK: dict[str, tuple[str, re.Pattern[str]]] = {}  # component → its id prefix, pattern


@cache
def _quick(own: str) -> re.Pattern[str]:
    """One element of plain tags (:data:`_PLAIN`, and ``svg`` of ``rect`` and ``polyline``)
    with attributes of no effect and ids starting with ``own``, nested at most :data:`_QUICK_DEPTH`
    deep: what a tick's parts are. Possessive throughout, so it never backtracks."""
    own = re.escape(own)
    attr = (
        rf"(?:{_SPACE}+(?:{_QUICK_NAMES}(?:{_SPACE}*={_SPACE}*{_VALUE})?"
        rf"|id{_SPACE}*={_SPACE}*(?:\"{own}{_ID_CHARS}\"|'{own}{_ID_CHARS}')))"
    )
    # the element's own attributes: its first id is the part's (read out, group "id")
    head = (
        rf"(?:{_SPACE}+{_QUICK_NAMES}(?:{_SPACE}*={_SPACE}*{_VALUE})?)*+"
        rf"{_SPACE}+id{_SPACE}*={_SPACE}*(?:\"(?P<id>{own}{_ID_CHARS})\"|'(?P<id1>{own}{_ID_CHARS})')"
        rf"{attr}*+"
    )
    svg = (
        rf"<svg{attr}*+{_SPACE}*>"
        rf"(?:{_SPACE}++|<(?:rect|polyline){attr}*+{_SPACE}*/>)*+"
        rf"</svg{_SPACE}*>"
    )
    plain = "|".join(_PLAIN)
    inner = ""
    for depth in range(_QUICK_DEPTH, -1, -1):
        content = (f"{inner}|" if inner else "") + rf"[^<]++|{svg}"
        inner = (
            rf"<(?P<t{depth}>{plain}){head if depth == 0 else attr + '*+'}{_SPACE}*>"
            rf"(?:{content})*+</(?P=t{depth}){_SPACE}*>"
        )
    return re.compile(rf"{_SPACE}*{inner}{_SPACE}*")


@cache
def _lexicon(component: str, own: str) -> re.Pattern[str]:
    """A part's tokens as the browser's tokenizer reads them, each tag of :data:`TAGS` with
    only allowed attributes and values: start tags, end tags and text (no ``<``)."""
    own_id = re.escape(own)
    urls = rf"(?:/fragments/{component}|/c/{component}/{_EVENT_NAME})"
    own_ref = rf"#{own_id}[A-Za-z0-9_-]*+(?![A-Za-z0-9_.:-])"  # possessive: linear
    # never a selector reaching past the component: not "closest body", not "next section"
    nearby = rf"(?:this|closest form|find [a-z][a-z0-9]*|{own_ref})"
    refs = rf"{own_id}{_ID_CHARS}(?: {own_id}{_ID_CHARS})*"
    plain = r"(?:(?!from:|every)[A-Za-z0-9:._ ,-])"
    trigger = rf"{plain}*+(?:from:(?:closest form(?![A-Za-z0-9_.:-])|{own_ref}){plain}*+)*+"

    def quoted(inner: str) -> str:
        return f"(?:\"{inner}\"|'{inner}')"

    value = rf"{_SPACE}*={_SPACE}*"
    attribute = (
        rf"{_SPACE}+(?:{_FREE_NAMES}(?:{value}{_VALUE})?"
        rf"|id{value}{quoted(own_id + _ID_CHARS)}"
        rf"|{_REF_NAMES}{value}{quoted(refs)}"
        rf"|hx-(?:get|post|put|patch|delete){value}{quoted(urls)}"
        rf"|hx-(?:target|select|include){value}{quoted(nearby)}"
        rf"|hx-swap{value}{quoted('[A-Za-z0-9:._ -]*')}"
        rf"|hx-trigger{value}{quoted(trigger)}"
        rf"|hx-vals{value}(?:\"{_SPACE}*\{{[^\"]*\"|'{_SPACE}*\{{[^']*'))"
    )
    # "/>" closes only an input (void) and the shapes of an svg, which always close so
    elements = _trie(TAGS - _VOID - _SHAPES)
    attributes = f"(?:{attribute})*+{_SPACE}*"
    return re.compile(
        rf"{_SPACE}*(?:<(?:{elements}){attributes}>|</(?:{elements}){_SPACE}*>"
        rf"|<input{attributes}/?>|<(?:rect|polyline){attributes}/>|[^<]++)*+"
    )


_TAGS = re.compile(r"<(/?[a-z0-9]+)")  # in a part whose tokens passed: every tag


def _structure(html: str) -> str | None:
    """Whether the tags of ``html`` (its tokens already checked) make one element that the
    parser builds as written: each closed in order, nothing it would close, move or drop.
    Linear: what it must know of the open elements it counts as they open and close."""
    stack: list[str] = []
    tags = _TAGS.findall(html)
    last = len(tags) - 1
    open_kinds = dict.fromkeys(_COUNTED, 0)  # p, form, button, headings open now
    for i, tag in enumerate(tags):
        if tag[0] == "/":
            tag = tag[1:]
            if not stack or stack.pop() != tag:
                return "not an element"
            if tag in _KIND:
                open_kinds[_KIND[tag]] -= 1
            if not stack and i != last:
                return "not an element"  # a second element follows
            continue
        parent = stack[-1] if stack else ""
        if parent in _PARENTS and tag not in _PARENTS[parent]:
            return "not an element"  # svg: shapes; ul: li; select, datalist: option; option: text
        if tag in _CHILDREN and parent not in _CHILDREN[tag]:
            return "not an element"  # an li only in a ul, an option in a select or datalist
        if tag in _SHAPES or tag in _VOID:  # they close themselves, inside the element
            if not stack or (tag in _SHAPES) != (parent == "svg"):
                return "not an element"
            continue  # (an input is phrasing content, a shape is inside an svg)
        if open_kinds["p"] and tag not in _PHRASING:
            return "not an element"  # it would close the paragraph
        kind = _KIND.get(tag)
        if kind is not None:
            if kind != "p" and open_kinds[kind]:
                return "not an element"  # the parser would close or drop it
            open_kinds[kind] += 1
        stack.append(tag)
        if len(stack) > _MAX_DEPTH:
            return "not an element"
    return None if not stack and tags else "not an element"


_PARENTS = {
    "svg": _SHAPES,
    "ul": frozenset({"li"}),
    "select": frozenset({"option"}),
    "datalist": frozenset({"option"}),
    "option": frozenset(),
}
_CHILDREN = {"li": frozenset({"ul"}), "option": frozenset({"select", "datalist"})}
_KIND = {"p": "p", "form": "form", "button": "button", "h2": "heading", "h3": "heading"}
_COUNTED = frozenset(_KIND.values())


_ANY_TAG = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9-]*)([^<>]*)")
_ANY_ATTR = re.compile(r"([^\t\n\f\r /=>\"']+)(?:\s*=\s*(?:\"([^\"]*)\"|'([^']*)'|([^\s>]*)))?")
_REQUESTS = frozenset({"hx-get", "hx-post", "hx-put", "hx-patch", "hx-delete"})


def _why(component: str, own: str, html: str) -> str:
    """What a refused part does wrong, for the drop counter (the verdict is already no):
    a tag or attribute not allowed or an htmx value that could run something ("active
    content"), a request elsewhere, a foreign id, or else its form ("not an element")."""
    lexicon = _lexicon(component, own)
    reasons = set()
    for _end, tag, attrs in _ANY_TAG.findall(html):
        if tag.lower() not in TAGS:
            reasons.add("active content")
        for name, *values in _ANY_ATTR.findall(attrs):
            name = name.lower()
            if name not in _FREE_LOWER and name not in _CHECKED and name not in _REFS:
                reasons.add("active content")
                continue
            value = next((v for v in values if v), "")
            quote = "'" if '"' in value else '"'
            probe = f"<div {name}={quote}{value}{quote}>"
            if "<" in value or quote in value or lexicon.fullmatch(probe) is not None:
                continue  # the value would do: the part is refused for its form
            if name in _REQUESTS:
                reasons.add("request to a foreign URL")
            elif name == "id" or name in _REFS:
                reasons.add("foreign id")
            else:
                reasons.add("active content")
    for reason in ("active content", "request to a foreign URL", "foreign id"):
        if reason in reasons:
            return reason
    return "not an element"
