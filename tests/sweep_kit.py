"""The machinery of the hostile-input sweep (tests/test_sweep.py).

- ``endpoints()``: every URL pattern of the resolver, with its namespace and view; ``build_path`` fills in
  its converters.
- ``view_reads()``: the form fields and query parameters a view reads, found in its source (and in the
  project functions and form classes it calls), so a new parameter is swept without editing the sweep.
- ``PageScan``: the forms and links of a rendered page (field names and their default values).
- ``HOSTILE``: the alphabet of hostile values; ``encode_pairs`` sends them byte-exact (lone surrogates too).
- ``Harness.send``: one request in a savepoint that is rolled back (every request meets the same world),
  timed; a server error or a slow answer goes into the ``Ledger``, which deduplicates by root cause
  (exception type + innermost project frame) and writes the findings file.
"""

import ast
import inspect
import json
import logging
import re
import textwrap
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from html.parser import HTMLParser
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import parse_qsl, quote, urljoin, urlsplit

import django
from django import forms as django_forms
from django.conf import settings
from django.db import transaction
from django.http import HttpResponse
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from django.urls.resolvers import RegexPattern
from django.utils import translation

PROJECT = Path(__file__).resolve().parent.parent
SITE_PACKAGES = Path(django.__file__).resolve().parent.parent
PROJECT_PACKAGES = ("crm", "accounts", "metrics", "surveys")
SLOW_SECONDS = 5.0
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
JSON_CONTENT_TYPE = "application/json"

# The alphabet of the issue: label -> value (a list is sent as the parameter repeated).
HOSTILE: dict[str, str | list[str]] = {
    "empty": "",
    "whitespace": " \t\r\n\u00a0\u3000",
    "nul": "\x00",
    "nul-inside": "a\x00b",
    "json-nul-escape": "\\u0000",
    "lone-high-surrogate": "\ud800",
    "lone-low-surrogate": "x\udfffy",
    "rtl-override": "\u202egnp.exe",
    "fullwidth-digits": "１２３",
    "fullwidth-date": "２０２４-０１-０１",
    "10k-chars": "x" * 10_000,
    "10k-digits": "9" * 10_000,
    "year-0": "0000-01-01",
    "year-1": "0001-01-01",
    "year-9999": "9999-12-31",
    "year-1-datetime": "0001-01-01T00:00:00",
    "year-9999-datetime": "9999-12-31T23:59:59",
    "number-0": "0",
    "number-1": "1",
    "number-9999": "9999",
    "negative": "-1",
    "negative-huge": "-9223372036854775809",
    "huge": "9223372036854775808",
    "float-overflow": "1e309",
    "nan": "NaN",
    "infinity": "-Infinity",
    "sql": "' OR 1=1 --",
    "sql-drop": "1); DROP TABLE crm_deal; --",
    "html": '<script>alert(1)</script>"><img src=x onerror=alert(1)>',
    "template": "{{ request }}{% debug %}%s%n",
    "path-traversal": "../../../../etc/passwd",
    "absolute-url": "https://evil.example/",
    "repeated": ["1", "<b>2</b>"],
}
# Reversed ranges: each pair is sent with "from" after "to".
RANGE_PAIRS = (
    ("from", "to"),
    ("since", "until"),
    ("start", "end"),
    ("date_from", "date_to"),
    ("min", "max"),
    ("after", "before"),
)


def reversed_ranges(params: Iterable[str]) -> list[dict[str, str]]:
    """One payload per known range pair (and per ``<x>_from``/``<x>_to`` the view reads), ends swapped."""
    pairs = set(RANGE_PAIRS)
    for name in params:
        for low, high in (("_from", "_to"), ("_min", "_max"), ("_after", "_before"), ("_start", "_end")):
            if name.endswith(low):
                pairs.add((name, name.removesuffix(low) + high))
    return [{low: "2030-12-31", high: "2000-01-01"} for low, high in sorted(pairs)]


def quote_path(text: str) -> str:
    """Percent-encoded UTF-8; a lone surrogate goes through as its (invalid) bytes, as a client could send."""
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


def encode_pairs(pairs: Iterable[tuple[str, str | list[str]]]) -> str:
    """``a=1&b=2`` byte-exact (see ``quote_path``); a list value repeats the parameter."""
    parts = []
    for key, value in pairs:
        for one in value if isinstance(value, list) else [value]:
            parts.append(f"{quote_path(key)}={quote_path(one)}")
    return "&".join(parts)


def json_body(data: dict[str, Any]) -> bytes:
    """A JSON body as a client would send it: NUL as ``\\u0000``, lone surrogates as ``\\ud800``."""
    return json.dumps(data).encode("ascii")


def describe(value: str | list[str], limit: int = 60) -> str:
    """A short repr of a hostile value for reports (10 000 characters are shown as a count)."""
    if isinstance(value, list):
        return "[" + ", ".join(describe(v, limit) for v in value) + "]"
    if len(value) > limit:
        return f"{value[:12]!r}…({len(value)} chars)"
    return repr(value)


# URL patterns
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    """One URL pattern with the chain of patterns from the root (to fill in its values) and its view."""

    label: str  # "crm:deal_detail", or "admin:<route>" for an unnamed pattern
    namespace: str  # "" for the root patterns
    local_route: str  # the route inside its namespace, e.g. "deals/<int:pk>/"
    chain: tuple[Any, ...]  # RoutePattern / RegexPattern objects from the root
    callback: Callable[..., HttpResponse]

    @property
    def route(self) -> str:
        return "".join(str(p) for p in self.chain)

    @property
    def kwargs(self) -> list[tuple[str, str]]:
        """(name, converter) of every value in the route; ``regex`` for a named group of a regex route."""
        found = []
        for pattern in self.chain:
            if isinstance(pattern, RegexPattern):
                named = list(pattern.regex.groupindex)
                found += [(name, "regex") for name in named or _group_names(pattern)]
            else:
                found += [
                    (name, conv or "str") for conv, name in re.findall(r"<(?:(\w+):)?(\w+)>", str(pattern))
                ]
        return found


def _group_names(pattern: RegexPattern) -> list[str]:
    """Unnamed groups of a regex route (positional view arguments) are called group1, group2, …"""
    return [f"group{n}" for n in range(1, pattern.regex.groups + 1)]


def endpoints() -> list[Endpoint]:
    """Every URL pattern of the project, namespaces and the admin included, in resolver order. The JSON
    API (``/api/…``) is left out: it is swept against its own OpenAPI schema (tests/api)."""
    found: list[Endpoint] = []

    def walk(patterns: list, chain: tuple, namespace: str, local: str) -> None:
        for pattern in patterns:
            if not chain and str(pattern.pattern).removeprefix("^").startswith("api/"):
                continue
            if isinstance(pattern, URLResolver):
                inner = pattern.namespace or namespace
                inner_local = "" if pattern.namespace else local + str(pattern.pattern)
                walk(pattern.url_patterns, (*chain, pattern.pattern), inner, inner_local)
            elif isinstance(pattern, URLPattern):
                route = local + str(pattern.pattern)
                name = pattern.name or route
                label = f"{namespace}:{name}" if namespace else name
                found.append(Endpoint(label, namespace, route, (*chain, pattern.pattern), pattern.callback))

    walk(get_resolver().url_patterns, (), "", "")
    return found


def build_path(endpoint: Endpoint, values: dict[str, str]) -> str:
    """The endpoint's path with ``values`` (percent-encoded) in place of its converters and groups."""
    parts = []
    for pattern in endpoint.chain:
        text = str(pattern)
        if isinstance(pattern, RegexPattern):
            text = text.removeprefix("^").removesuffix("$")
            text = re.sub(r"\(\?P<(\w+)>[^()]*\)", lambda m: quote_path(values[m[1]]), text)
            unnamed = iter(_group_names(pattern))
            text = re.sub(r"\((?!\?)[^()]*\)", lambda _m, n=unnamed: quote_path(values[next(n)]), text)
            assert not re.search(r"[()^$\\*+?\[\]|]", text), f"teach the sweep the regex route {pattern}"
        else:
            text = re.sub(r"<(?:\w+:)?(\w+)>", lambda m: quote_path(values[m[1]]), text)
        parts.append(text)
    return "/" + "".join(parts)


# Parameters a view reads
# ---------------------------------------------------------------------------------------------------------

_REQUEST_DICTS = {"GET", "POST", "FILES"}
_SCAN_DEPTH = 4  # view -> helper -> helper -> ...: deep enough for every request read in the apps
_KEYED_READS = {"get", "getlist", "pop", "setdefault", "__getitem__"}
_WHOLE_READS = {"dict", "items", "lists", "keys", "values", "urlencode", "copy"}


@dataclass
class ViewReads:
    """What a view reads: parameter names, and whether it reads the whole query dict (then any name)."""

    names: set[str] = field(default_factory=set)
    whole: bool = False


def view_reads(view: Callable[..., Any]) -> ViewReads:
    """The parameters ``view`` reads: ``request.GET/POST.get("x")``, ``request.GET["x"]``, the fields of
    every form it binds to the request's data, in its own source and in the project functions and classes
    it calls; for a class-based view, its form class and redirect field too."""
    reads = ViewReads()
    seen: set[Any] = set()
    view_class = getattr(view, "view_class", None)
    if view_class is None:
        _scan(inspect.unwrap(view), reads, seen, 0)
        return reads
    initkwargs = getattr(view, "view_initkwargs", {})
    for klass in view_class.__mro__:
        _scan(klass, reads, seen, 0)
    for attribute in ("form_class", "authentication_form"):
        if form := initkwargs.get(attribute) or getattr(view_class, attribute, None):
            reads.names.update(form.base_fields)
    if redirect_field := getattr(view_class, "redirect_field_name", None):
        reads.names.add(redirect_field)
    return reads


def _is_project(obj: Any) -> bool:
    module = getattr(obj, "__module__", None) or ""
    return (inspect.isfunction(obj) or inspect.isclass(obj)) and module.split(".")[0] in PROJECT_PACKAGES


def _scan(obj: Any, reads: ViewReads, seen: set[Any], depth: int) -> None:
    if obj is None or obj in seen or depth > _SCAN_DEPTH:
        return
    seen.add(obj)
    if not _is_project(obj):
        return
    module = inspect.getmodule(obj)
    for node in ast.walk(_source_tree(obj)):
        call = node.func if isinstance(node, ast.Call) else None
        if isinstance(call, ast.Attribute) and _is_request_dict(call.value):
            if call.attr in _KEYED_READS and node.args:
                _add_literal(node.args[0], module, reads)
            elif call.attr in _WHOLE_READS:
                reads.whole = True
        elif isinstance(node, ast.Subscript) and _is_request_dict(node.value):
            _add_literal(node.slice, module, reads)
        elif call is not None:
            target = _resolve(call, module)
            if inspect.isclass(target) and issubclass(target, django_forms.BaseForm):
                if any(_reads_request(arg) for arg in [*node.args, *node.keywords]):
                    reads.names.update(target.base_fields)  # a form bound to the request's data
            else:
                _scan(target, reads, seen, depth + 1)


@cache
def _source_tree(obj: Any) -> ast.AST:
    return ast.parse(textwrap.dedent(inspect.getsource(obj)))


def _is_request_dict(node: ast.AST) -> bool:
    return isinstance(node, ast.Attribute) and node.attr in _REQUEST_DICTS


def _reads_request(node: ast.AST) -> bool:
    return any(_is_request_dict(inner) for inner in ast.walk(node))


def _add_literal(node: ast.AST, module: ModuleType | None, reads: ViewReads) -> None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        reads.names.add(node.value)
    elif isinstance(node, ast.Name) and isinstance(getattr(module, node.id, None), str):
        reads.names.add(getattr(module, node.id))


def _resolve(node: ast.AST, module: ModuleType | None) -> Any:
    """The object a call's target names in ``module`` (``helper``, ``forms.DealForm``), if any."""
    if isinstance(node, ast.Name):
        return getattr(module, node.id, None)
    if isinstance(node, ast.Attribute):
        owner = _resolve(node.value, module)
        return getattr(owner, node.attr, None) if isinstance(owner, ModuleType | type) else None
    return None


# Forms and links of a rendered page
# ---------------------------------------------------------------------------------------------------------


@dataclass
class PageForm:
    """A form of a page: where it goes, its field names, and a filled-in submission of it."""

    action: str  # path, without query string
    method: str
    names: list[str] = field(default_factory=list)
    filled: list[tuple[str, str]] = field(default_factory=list)
    radios: dict[str, list[str]] = field(default_factory=dict)  # name -> [checked or first value]


# What an empty text input is filled with, by type, so the rest of a form is valid around a hostile field.
FILL = {
    "email": "sweep@example.com",
    "number": "1",
    "date": "2026-01-15",
    "datetime-local": "2026-01-15T10:00",
    "time": "10:00",
    "tel": "+49 30 1234567",
    "url": "https://example.com/",
    "password": "Sweep password 1",
}
FILL_TEXT = "Sweep text"


class PageScan(HTMLParser):
    """The forms of a page, each with a filled-in submission (the defaults, a checked or the first radio,
    the selected or first non-empty option, and plain values in empty inputs), and the parameter names in
    its links and ``hx-get`` URLs, by the path they go to."""

    def __init__(self, page_path: str, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.page_path = page_path
        self.forms: list[PageForm] = []
        self.link_params: dict[str, set[str]] = {}
        self._form: PageForm | None = None
        self._select: tuple[str, list[str], list[str]] | None = None  # name, options, selected
        self._textarea: tuple[str, list[str]] | None = None
        self.feed(html)
        self.close()

    def _target(self, url: str) -> tuple[str, list[str]]:
        parts = urlsplit(urljoin(self.page_path, url))
        return parts.path, [key for key, _value in parse_qsl(parts.query, keep_blank_values=True)]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {key: value or "" for key, value in attrs}
        for attribute in ("href", "hx-get"):
            if a.get(attribute) and not a[attribute].startswith(("#", "mailto:", "javascript:")):
                path, keys = self._target(a[attribute])
                self.link_params.setdefault(path, set()).update(keys)
        if tag == "form":
            action = a.get("action") or a.get("hx-post") or a.get("hx-get") or ""
            method = a.get("method") or ("post" if "hx-post" in a else "get")
            path, keys = self._target(action)
            self._form = PageForm(path, method.lower(), names=keys)
        elif tag == "option" and self._select is not None:
            self._select[1].append(a.get("value", ""))
            if "selected" in a:
                self._select[2].append(a.get("value", ""))
        elif self._form is not None and a.get("name") and tag in ("input", "select", "textarea", "button"):
            self._field(tag, a["name"], a)

    def _field(self, tag: str, name: str, a: dict[str, str]) -> None:
        form = self._form
        form.names.append(name)
        kind = a.get("type", "text").lower()
        if tag == "select":
            self._select = (name, [], [])
        elif tag == "textarea":
            self._textarea = (name, [])
        elif tag != "input" or kind in ("submit", "button", "image", "reset", "file"):
            return
        elif kind == "radio":
            values = form.radios.setdefault(name, [])
            if "checked" in a:
                values.insert(0, a.get("value", "on"))
            elif not values:
                values.append(a.get("value", "on"))
        elif kind == "checkbox":
            if "checked" in a:
                form.filled.append((name, a.get("value", "on")))
        elif kind == "hidden":
            form.filled.append((name, a.get("value", "")))
        else:
            form.filled.append((name, a.get("value") or FILL.get(kind, FILL_TEXT)))

    def handle_data(self, data: str) -> None:
        if self._textarea is not None:
            self._textarea[1].append(data)

    def handle_endtag(self, tag: str) -> None:
        form = self._form
        if form is None:
            return
        if tag == "select" and self._select is not None:
            name, options, selected = self._select
            chosen = selected or [next((o for o in options if o), "")]
            form.filled += [(name, value) for value in chosen]
            self._select = None
        elif tag == "textarea" and self._textarea is not None:
            text = "".join(self._textarea[1]).strip("\n")
            form.filled.append((self._textarea[0], text or FILL_TEXT))
            self._textarea = None
        elif tag == "form":
            form.filled += [(name, values[0]) for name, values in form.radios.items()]
            self.forms.append(form)
            self._form = None


# Findings
# ---------------------------------------------------------------------------------------------------------


@dataclass
class Sent:
    """How to reproduce one request."""

    method: str
    url: str  # path and query string, percent-encoded
    role: str
    htmx: bool
    data: str = ""  # the body, short
    param: str = ""  # which parameter carried which hostile value
    value: str = ""

    def __str__(self) -> str:
        what = f" — {self.param}" if self.param else ""
        what += f" = {self.value}" if self.value else ""
        data = f", data `{self.data}`" if self.data else ""
        htmx = "yes" if self.htmx else "no"
        return f"`{self.method} {_cut(self.url, 200)}` as {self.role}, htmx={htmx}{data}{what}"


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit]}…({len(text)} chars)"


@dataclass
class Finding:
    """One root cause, with the shortest request that shows it for each different message it gave."""

    kind: str  # the exception's type, or "slow"
    where: str  # file:line of the innermost project frame
    sections: set[str]
    examples: dict[str, tuple[str, Sent]] = field(default_factory=dict)  # message shape -> message, request
    count: int = 0

    def add(self, message: str, sent: Sent, section: str) -> None:
        self.count += 1
        self.sections.add(section)
        shape = re.sub(r"'[^']*'|\"[^\"]*\"|\d+", "…", message)  # values and numbers aside
        known = self.examples.get(shape)
        if known is None or len(sent.url) + len(sent.data) < len(known[1].url) + len(known[1].data):
            self.examples[shape] = (message, sent)

    @property
    def in_project(self) -> bool:
        return not self.where.endswith("(no project frame)")


def innermost_project_frame(exc: BaseException) -> str:
    """``path:line in function`` of the deepest traceback frame in the project's own code; without one, of
    the deepest in a third-party package, else in ``django.contrib`` (the admin), else the last frame."""
    frames = _frames(exc)
    for tier in (_in_project, _in_third_party, _in_django_contrib, _anywhere):
        for path, frame in reversed(frames):
            if tier(path):
                note = "" if tier is _in_project else " (no project frame)"
                return f"{_shown(path)}:{frame.lineno} in {frame.name}{note}"
    return "?"


def raised_below_project(exc: BaseException) -> str:
    """Where a third-party package or ``django.contrib`` raised it, below the deepest project frame (a
    project wrapper around the admin's views is not the cause), or ""."""
    frames = _frames(exc)
    deepest = max((i for i, (path, _f) in enumerate(frames) if _in_project(path)), default=len(frames))
    for path, frame in reversed(frames[deepest + 1 :]):
        if _in_third_party(path) or _in_django_contrib(path):
            return f"{_shown(path)}:{frame.lineno} in {frame.name}"
    return ""


def _frames(exc: BaseException) -> list[tuple[Path, traceback.FrameSummary]]:
    return [(_real_path(f.filename), f) for f in traceback.extract_tb(exc.__traceback__)]


def _real_path(filename: str) -> Path:
    """The file without symlinks; pseudo-files such as ``<frozen codecs>`` stay as they are."""
    path = Path(filename)
    return path.resolve() if path.is_absolute() else path


def _in_project(path: Path) -> bool:
    inside = path.is_relative_to(PROJECT)
    return inside and not path.is_relative_to(SITE_PACKAGES) and not path.is_relative_to(PROJECT / "tests")


def _in_third_party(path: Path) -> bool:
    """simple_history, axes, …: not Django itself, nor the database driver every query error ends in."""
    plain = (SITE_PACKAGES / "django", SITE_PACKAGES / "psycopg")
    return path.is_relative_to(SITE_PACKAGES) and not any(path.is_relative_to(p) for p in plain)


def _in_django_contrib(path: Path) -> bool:
    return path.is_relative_to(SITE_PACKAGES / "django" / "contrib")


def _anywhere(path: Path) -> bool:
    return True


def _shown(path: Path) -> str:
    for base in (SITE_PACKAGES, PROJECT):
        if path.is_relative_to(base):
            return str(path.relative_to(base))
    return str(path)


class Ledger:
    """Counts requests and collects findings, one per root cause (exception type + project frame)."""

    def __init__(self, progress: Callable[[str], None] | None = None, every: int = 10_000) -> None:
        self.requests = 0
        self.server_errors = 0
        self.slow = 0
        self.findings: dict[tuple[str, str], Finding] = {}
        self.section = ""
        self.started = time.monotonic()
        self.progress, self.every = progress, every

    def count(self) -> None:
        self.requests += 1
        if self.progress is not None and self.requests % self.every == 0:
            seconds = time.monotonic() - self.started
            self.progress(
                f"… {self.section}: {self.requests} requests, {self.server_errors} 500s, {seconds:.0f} s"
            )

    def _add(self, kind: str, where: str, message: str, sent: Sent) -> None:
        finding = self.findings.setdefault((kind, where), Finding(kind, where, set()))
        finding.add(message, sent, self.section)

    def server_error(self, exc: BaseException | None, sent: Sent, status: int, endpoint: str) -> None:
        self.server_errors += 1
        if exc is None:
            self._add(f"HTTP {status}", endpoint, "a 5xx response without an exception", sent)
        else:
            message = (str(exc).strip().splitlines() or [""])[0][:200]
            if raised := raised_below_project(exc):
                message += f" [raised at {raised}]"
            self._add(type(exc).__name__, innermost_project_frame(exc), message, sent)

    def too_slow(self, seconds: float, cpu: float, sent: Sent, endpoint: str) -> None:
        self.slow += 1
        self._add("slow", endpoint, f"{seconds:.1f} s ({cpu:.1f} s CPU), over {SLOW_SECONDS:.0f} s", sent)

    def in_section(self, section: str) -> list[Finding]:
        return [f for f in self.findings.values() if section in f.sections]

    def summary(self, mode: str, seed: int) -> str:
        seconds = time.monotonic() - self.started
        return (
            f"sweep: {self.requests} requests, {self.server_errors} server errors (500s), "
            f"{self.slow} slow (> {SLOW_SECONDS:.0f} s), {seconds:.0f} s [{mode}, seed {seed}]"
        )

    def write(self, path: Path, mode: str, seed: int) -> None:
        """The findings file: the summary, then one line per root cause (project code first), with the
        shortest reproducing request, and one more per different message the same frame gave."""
        findings = sorted(self.findings.values(), key=lambda f: (not f.in_project, f.where))
        lines = [
            "# Hostile-input sweep: findings",
            "",
            self.summary(mode, seed),
            "",
            f"{len(findings)} distinct root causes (exception type + innermost project frame), "
            f"{sum(f.in_project for f in findings)} in the project's code. Requests are against the sweep's "
            "world (tests/test_sweep.py); a value shown as '…(n chars)' is that long.",
            "",
        ]
        for number, finding in enumerate(findings, start=1):
            sections = ", ".join(sorted(finding.sections))
            lines.append(f"{number}. **{finding.kind}** at `{finding.where}` ({finding.count}×, {sections})")
            for message, sent in finding.examples.values():
                lines.append(f"   - {_cut(message, 400)} — {sent}")
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")


# Sending
# ---------------------------------------------------------------------------------------------------------


class Harness:
    """Sends requests as the sweep's roles. Each request runs in a savepoint that is rolled back unless
    ``keep`` (so every request meets the same world, and a failed SQL statement cannot poison the next),
    is timed, and lands in the ledger when it is a server error or slower than ``SLOW_SECONDS``."""

    def __init__(self, clients: dict[str, Client], login: Callable[[str], None], ledger: Ledger) -> None:
        self.clients = clients
        self.login = login
        self.ledger = ledger

    def send(
        self,
        *,
        role: str,
        method: str,
        path: str,
        query: str = "",
        body: bytes = b"",
        content_type: str = FORM_CONTENT_TYPE,
        htmx: bool = False,
        headers: dict[str, str] | None = None,
        endpoint: str = "",
        param: str = "",
        value: str = "",
        keep: bool = False,
        multipart: dict[str, Any] | None = None,
    ) -> HttpResponse:
        client = self.clients[role]
        url = f"{path}?{query}" if query else path
        headers = {**({"HX-Request": "true"} if htmx else {}), **(headers or {})}
        shown = _cut(body.decode("ascii", "replace"), 300) if body else _multipart_text(multipart)
        sent = Sent(method, url, role, htmx, shown, param, value)
        started, cpu = time.perf_counter(), time.process_time()
        with transaction.atomic():
            if multipart is not None:
                response = client.post(url, multipart, headers=headers)
            else:
                response = client.generic(method, url, body, content_type, headers=headers)
            failure = response.exc_info[1] if response.exc_info else None
            if response.streaming and response.status_code < 500:
                failure = _drain(response)
            if failure is not None or response.status_code >= 500 or not keep:
                transaction.set_rollback(True)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        self.ledger.count()
        if failure is not None or response.status_code >= 500:
            self.ledger.server_error(failure, sent, response.status_code, endpoint or path)
            response.status_code = 500  # a download that failed while streaming is a 500 to the caller too
        if seconds > SLOW_SECONDS:
            self.ledger.too_slow(seconds, cpu, sent, endpoint or path)
        session = client.cookies.get(settings.SESSION_COOKIE_NAME)
        if role != "anonymous" and (session is None or not session.value):
            self.login(role)  # the request signed the role out (a logout): sign in again
        return response

    def run_task(
        self,
        task: Any,
        *args: Any,
        sent: Sent,
        crashed: Callable[[], str] | None = None,
        logger: str = "",
    ) -> None:
        """Run a Celery task here, as a worker would (``apply``: Celery keeps its exception), kept unless
        it fails; a failure or a slow run is a finding like a 500.

        A task whose catch-all turns a crash into a recorded outcome (an import job "failed because of an
        unexpected error") does not fail: ``crashed`` reads that outcome after the run ("" when there was
        none), and the crash is a finding too, with the exception the catch-all logged to ``logger``."""
        started, cpu = time.perf_counter(), time.process_time()
        with logged_exceptions(logger) as logged, transaction.atomic():
            result = task.apply(args=args)
            crash = "" if result.failed() or crashed is None else crashed()
            if result.failed() or crash:
                transaction.set_rollback(True)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        self.ledger.count()
        if result.failed():
            self.ledger.server_error(result.result, sent, 500, task.name)
        elif crash:
            exc = logged[-1] if logged else CaughtCrash(crash)
            self.ledger.server_error(exc, sent, 500, task.name)
        if seconds > SLOW_SECONDS:
            self.ledger.too_slow(seconds, cpu, sent, task.name)


class CaughtCrash(Exception):
    """A crash a task's catch-all recorded without logging its exception (the finding shows the record)."""


class _Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.exceptions: list[BaseException] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.exc_info[1] is not None:
            self.exceptions.append(record.exc_info[1])


@contextmanager
def logged_exceptions(name: str) -> Iterator[list[BaseException]]:
    """The exceptions logger ``name`` logs meanwhile (``logger.exception`` in a catch-all), with their
    tracebacks, kept here instead of printed, even while the sweep silences logging (errors only)."""
    if not name:
        yield []
        return
    logger, handler = logging.getLogger(name), _Kept()
    silenced, propagate = logging.root.manager.disable, logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    logging.disable(min(silenced, logging.WARNING))
    try:
        yield handler.exceptions
    finally:
        logging.disable(silenced)
        logger.propagate = propagate
        logger.removeHandler(handler)


def import_crash(job_id: int) -> str:
    """The error an import job recorded when its run crashed (the catch-all of ``import_job_run`` marks it
    failed with ``UNEXPECTED_ERROR``, in the language active then), else ""."""
    from crm.data.imports.services import UNEXPECTED_ERROR
    from crm.models import ImportJob

    job = ImportJob.objects.without_content().filter(pk=job_id, status=ImportJob.Status.FAILED).first()
    if job is None:
        return ""
    for code, _name in settings.LANGUAGES:
        with translation.override(code):
            pattern = re.escape(str(UNEXPECTED_ERROR)).replace(re.escape("%(error)s"), ".+")
        if re.fullmatch(pattern, job.error, re.S):
            return job.error
    return ""


def _drain(response: HttpResponse) -> BaseException | None:
    """Read a streamed body to its end; an exception while streaming is a server error like any other."""
    try:
        for _chunk in response.streaming_content:
            pass
    except Exception as exc:  # recorded as a finding by the caller, and the test fails on it
        return exc
    return None


def _multipart_text(data: dict[str, Any] | None) -> str:
    if not data:
        return ""
    return ", ".join(
        f"{key}={getattr(value, 'name', None) or describe(value)}" for key, value in data.items()
    )
