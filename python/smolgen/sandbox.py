"""The sandbox a chat template renders in: formatting only, under a deadline and a size budget.

A chat template comes from a model file or from a user, so it is untrusted code. Jinja's
``ImmutableSandboxedEnvironment`` refuses Python internals and writes to the messages; it does not
stop a template from looping, recursing or building strings and lists without end. Here every
render also runs

- under a **deadline** (:data:`TIME_LIMIT` seconds unless the template is given another), checked
  at each step of each ``for`` loop and at each call: loops and calls (macros recursing,
  ``loop(...)``) are the only ways a template repeats work, anything else in its source runs
  once. Most other hooks read the clock too; the commonest (``+`` of strings, a filter returning
  a string) skip it for that reason.
- under a **size budget**: each string, list or dict the template builds is measured (roughly in
  bytes of memory; a container's item counts :data:`ITEM`) against a cap on any one value and a
  total for the render, :data:`BUDGET` plus :data:`INPUT_FACTOR` times the size of the messages
  (a long conversation may take proportionally more work). A loop's step costs one, and
  :data:`STEP` more for each output its body appends (a macro's output is a list until joined). An
  operation whose result can dwarf its inputs (``'a' * n``, ``'x'.ljust(n)``, ``'%0*d'``,
  ``indent``, ``replace``, ``lipsum``, ...) is checked from its arguments before it runs; the
  rest are charged when they return, so no one operation allocates more than a small multiple of
  the cap.
- with Python's recursion limit, and the template's source and bracket nesting bounded at
  compile time (:data:`MAX_SOURCE_CHARS`, :data:`MAX_NESTING`).

Every refusal is a :class:`ChatTemplateError` naming its cause.

The hooks, for jinja2 3.1 (the version required; ``tests/test_template_limits.py`` has a template
for each):

- ``intercepted_binops``: ``*``, ``%`` and ``**`` go through :meth:`call_binop`; a chain
  ``a + b + c`` goes through :meth:`add` at once (strings joined, anything else through
  :meth:`call_binop`).
- :meth:`call` sees every call a template makes: macros, ``caller()``, ``loop(...)``, globals and
  methods (``str.ljust``, ``str.join``, ...). ``str.format`` goes through
  :meth:`wrap_str_format`'s formatter, which bounds each field.
- Every filter that can build something is wrapped (:func:`_bounded_filter`); ``join``, ``sum``
  and ``tojson`` are replaced, ``lipsum`` and ``strftime_now`` are bounded globals. ``range``
  stays the sandbox's (at most 100,000 items).
- The code generator (``code_generator_class``) wraps each ``for`` loop's iterable in
  :meth:`steps` (a recursive loop's ``loop(...)`` is wrapped in :meth:`call`), and routes ``+``
  through :meth:`add`, ``~`` through :meth:`join_values`, slices through :meth:`getslice` and
  list, tuple and dict displays through :meth:`literal`.
- Macro, block and ``{% set %}`` output is joined by ``environment.concat``, here :meth:`concat`;
  each ``{{ ... }}`` goes through ``finalize`` (:meth:`_finalize`) before it is made a string.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import re
import time
import types
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from datetime import datetime
from typing import Any

from jinja2 import nodes, pass_environment, pass_eval_context
from jinja2.compiler import CodeGenerator, Frame, optimizeconst
from jinja2.filters import make_attrgetter, sync_do_join
from jinja2.runtime import BlockReference, LoopContext, Macro, markup_join, str_join
from jinja2.sandbox import (
    ImmutableSandboxedEnvironment,
    SandboxedEscapeFormatter,
    SandboxedFormatter,
)
from jinja2.utils import Namespace, generate_lorem_ipsum
from markupsafe import Markup

from .errors import ChatTemplateError, InvalidArgumentError

#: Seconds a render may run, unless ``SMOLGEN_TEMPLATE_TIME_LIMIT`` or ``time_limit=`` says.
TIME_LIMIT = 1.0
TIME_LIMIT_VARIABLE = "SMOLGEN_TEMPLATE_TIME_LIMIT"
#: What a template may build in one render whatever it is given, roughly in bytes.
BUDGET = 8_000_000
#: ... plus this many times the size of the messages it renders.
INPUT_FACTOR = 8
#: The largest value a template may build, and the longest prompt it may render: the largest
#: context windows are a few million characters.
MAX_VALUE = 16_000_000
#: A container's item, for its pointer and its object's header.
ITEM = 64
#: A pointer: what a copied list costs per item (the items exist already).
POINTER = 8
#: Each output a ``for`` loop's body appends, per step: a pointer in the list of a macro's output.
STEP = 8
#: The largest integer ``*`` and ``**`` may make, in bits.
MAX_INT_BITS = 4096
#: Filters that run in Python, character by character or word by word, take at most this much.
MAX_SLOW_INPUT = 200_000
#: ``lipsum`` makes at most this many words.
MAX_LIPSUM_WORDS = 100_000
#: ``tojson``'s indent, at most.
MAX_JSON_INDENT = 64
#: A template's source, at most (the largest templates models ship are tens of thousands).
MAX_SOURCE_CHARS = 262_144
#: Brackets inside brackets, at most (the parser recurses once per level).
MAX_NESTING = 32


def default_time_limit() -> float:
    """:data:`TIME_LIMIT`, or ``$SMOLGEN_TEMPLATE_TIME_LIMIT`` when set."""
    raw = os.environ.get(TIME_LIMIT_VARIABLE)
    if raw is None or not raw.strip():
        return TIME_LIMIT
    try:
        return checked_time_limit(float(raw))
    except (ValueError, InvalidArgumentError):
        raise InvalidArgumentError(
            f"{TIME_LIMIT_VARIABLE} must be a number of seconds > 0, got {raw!r}"
        ) from None


def checked_time_limit(seconds: float) -> float:
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise InvalidArgumentError(f"time_limit must be a number of seconds, got {seconds!r}")
    if not (seconds > 0 and math.isfinite(seconds)):
        raise InvalidArgumentError(f"time_limit must be > 0 seconds, got {seconds!r}")
    return float(seconds)


# --- the budget of one render ------------------------------------------------------------------


class Budget:
    """The deadline and the size budget of one render (or one compile).

    The objects the template was given (``inputs``: the messages, the special tokens) are
    measured only when needed, which a template that stays well inside :data:`BUDGET` never
    makes happen: to raise the budget by :data:`INPUT_FACTOR` times their size before refusing
    anything, and to know them by ``id`` when measuring a list that holds them (they exist
    already: only the list is new). They outlive the render, so their ids stay theirs.
    """

    __slots__ = ("_known", "cap", "deadline", "inputs", "limit", "spent", "start", "time_limit")

    def __init__(self, time_limit: float, inputs: tuple[Any, ...] = ()) -> None:
        self.time_limit = time_limit
        self.start = time.monotonic()
        self.deadline = self.start + time_limit
        self.inputs = inputs
        self._known: dict[int, int] | None = None
        self.limit = BUDGET
        self.cap = min(MAX_VALUE, BUDGET)
        self.spent = 0

    @property
    def known(self) -> dict[int, int]:
        """The size of each given object by ``id``; measuring them raises the budget."""
        if self._known is None:
            known: dict[int, int] = {}
            given = sum(_measure_input(value, known) for value in self.inputs)
            self._known = known
            self.limit = BUDGET + INPUT_FACTOR * given
            self.cap = min(MAX_VALUE, self.limit)
        return self._known

    # Raising, with the cause in words.

    def late(self) -> ChatTemplateError:
        elapsed = time.monotonic() - self.start
        return ChatTemplateError(
            f"the chat template exceeded its deadline: still running after {elapsed:.2f} s "
            f"(limit {self.time_limit:g} s)"
        )

    def refuse(self, size: int, what: str, spent: int) -> None:
        """Raises unless ``size`` fits after all once the inputs are counted in."""
        if self._known is None:
            self.known  # noqa: B018 (raises the limit by the inputs' share)
        if size > self.cap:
            raise ChatTemplateError(
                f"the chat template exceeded its size budget: {what} would build about "
                f"{size:,} bytes, more than the {self.cap:,} one value may hold"
            )
        if spent > self.limit:
            raise ChatTemplateError(
                f"the chat template exceeded its size budget: {what} took it past the "
                f"{self.limit:,} bytes a render may build in all"
            )

    # Checking and charging.

    def tick(self) -> None:
        if time.monotonic() > self.deadline:
            raise self.late()

    def step(self) -> None:
        """One step of a loop (already counted by a loop's own :class:`_Steps`)."""
        if self.spent > self.limit:
            self.refuse(0, "the steps of its for loops", self.spent)
        if time.monotonic() > self.deadline:
            raise self.late()

    def check(self, size: int, what: str) -> None:
        """Before an operation that would build ``size``: refuses it if that does not fit."""
        if size > self.cap or self.spent + size > self.limit:
            self.refuse(size, what, self.spent + size)
        if time.monotonic() > self.deadline:
            raise self.late()

    def spend(self, size: int, what: str) -> None:
        """After an operation that built ``size``."""
        self.spent += size
        if size > self.cap or self.spent > self.limit:
            self.refuse(size, what, self.spent)
        if time.monotonic() > self.deadline:
            raise self.late()

    def size(self, value: Any) -> int:
        """About how large ``value`` prints, in characters: a string its length, a container
        its items and :data:`ITEM` more each. Stops counting soon after the cap. Measured where
        a value may be made a string (printed, joined, formatted); the given objects are
        measured once."""
        if type(value) is str:
            return len(value)
        if isinstance(value, _SCALARS):
            return ITEM
        known = self.known
        hit = known.get(id(value))
        if hit is not None:
            return hit
        cap = self.cap
        size = 0
        stack = [value]
        while stack:
            item = stack.pop()
            hit = known.get(id(item))
            if hit is not None:
                size += hit
                continue
            # By type, not isinstance: a Namespace answers isinstance through Python code.
            kind = type(item)
            size += ITEM
            if issubclass(kind, (str, bytes, bytearray)):
                size += len(item)
            elif issubclass(kind, int):
                size += item.bit_length() // 3
            elif issubclass(kind, (list, tuple, set, frozenset, *_DICT_VIEWS)):
                stack.extend(item)
            elif issubclass(kind, dict):
                stack.extend(item)
                stack.extend(item.values())
            elif kind is Namespace:
                attrs = object.__getattribute__(item, "_Namespace__attrs")
                stack.extend(attrs)
                stack.extend(attrs.values())
            if size > cap:
                break
        return size

    def checked(self, value: Any, what: str) -> Any:
        """``value``, once its size (should the template print it) fits the cap."""
        if type(value) is not str and not isinstance(value, _SCALARS):
            size = self.size(value)
            if size > self.cap:
                self.refuse(size, what, self.spent)
        return value

    def produced(self, value: Any, what: str, per_item: int = ITEM) -> Any:
        """``value``, charged as new memory: a string its length, a container :data:`ITEM`
        and ``per_item`` for each item (its pointer and, unless the items existed already, their
        headers); an iterator comes back counted item by item as it is consumed."""
        if type(value) is str:
            self.spend(len(value), what)
        elif isinstance(value, _SCALARS):
            self.tick()
        elif isinstance(value, (str, bytes, bytearray)):
            self.spend(len(value), what)
        elif isinstance(value, (list, tuple, dict, set, frozenset)):
            self.spend(ITEM + per_item * len(value), what)
        elif type(value) is Namespace:
            attrs = object.__getattribute__(value, "_Namespace__attrs")
            self.spend(ITEM + ITEM * len(attrs), what)
        elif isinstance(value, Iterator):
            return _Counted(value, self, what)
        else:
            self.tick()
        return value


_SCALARS = (bool, int, float, type(None))
_DICT_VIEWS: tuple[type, ...] = (type({}.keys()), type({}.values()), type({}.items()))


def _measure_input(value: Any, known: dict[int, int]) -> int:
    """Size of a given object (messages: a list of dicts of strings), each part recorded."""
    if type(value) is str:
        size = len(value)
    elif isinstance(value, dict):
        size = ITEM * len(value)
        for k, v in value.items():
            if type(v) is str:  # a message's role or content
                n = len(v)
                known[id(v)] = n
                size += len(k) + n
            else:
                size += _measure_input(k, known) + _measure_input(v, known)
    elif isinstance(value, (list, tuple)):
        size = ITEM * len(value)
        for v in value:
            size += _measure_input(v, known)
    elif isinstance(value, str):
        size = len(value)
    else:
        return ITEM
    known[id(value)] = size
    return size


_CURRENT: ContextVar[Budget | None] = ContextVar("smolgen_template_budget", default=None)


def current() -> Budget:
    """The budget of the render under way; outside one (Jinja folds constant filters while it
    compiles) a fresh budget, so one value is still bounded."""
    budget = _CURRENT.get()
    return Budget(TIME_LIMIT) if budget is None else budget


class budget_scope:
    """``with budget_scope(budget):`` makes ``budget`` the one the hooks charge."""

    def __init__(self, budget: Budget) -> None:
        self.budget = budget

    def __enter__(self) -> Budget:
        self.token = _CURRENT.set(self.budget)
        return self.budget

    def __exit__(self, *exc: object) -> None:
        _CURRENT.reset(self.token)


class _Steps:
    """A ``for`` loop's iterable, each item charged ``cost`` and the clock read. Keeps ``len``
    (``loop.length``)."""

    __slots__ = ("budget", "cost", "iterable")

    def __init__(self, iterable: Any, budget: Budget, cost: int) -> None:
        self.iterable = iterable
        self.budget = budget
        self.cost = cost

    def __len__(self) -> int:
        return len(self.iterable)

    def __iter__(self) -> Iterator[Any]:
        budget = self.budget
        cost = self.cost
        clock = time.monotonic
        for item in self.iterable:
            budget.spent += cost  # Budget.step, inlined: this runs for every item of every loop
            if budget.spent > budget.limit or clock() > budget.deadline:
                budget.step()
            yield item


class _Counted:
    """An iterator a filter returned (``map``, ``select``, ``batch``...), each item charged as
    it comes, so consuming one (``|list``, ``|join``) is bounded too."""

    __slots__ = ("budget", "iterator", "what")

    def __init__(self, iterator: Iterator[Any], budget: Budget, what: str) -> None:
        self.iterator = iterator
        self.budget = budget
        self.what = what

    def __iter__(self) -> _Counted:
        return self

    def __next__(self) -> Any:
        item = next(self.iterator)
        self.budget.spent += POINTER  # whoever consumes it likely keeps it in a list
        return self.budget.produced(item, self.what)


# --- estimates of what an operation will build, from its arguments -----------------------------

# printf-style conversions: %(key)flags width .precision length type
_PERCENT_SPEC = re.compile(
    r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?[diouxXeEfFgGcrsab%]"
)
_DIGITS = re.compile(r"\d+")
_ASCII_SPACE = " \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f"
_LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"


def _percent_estimate(budget: Budget, fmt: Any, values: Any) -> int:
    """What ``fmt % values`` builds at most: the format, each field's width and precision, and
    the largest value once per field (``%(a)s%(a)s`` prints ``a`` twice)."""
    if isinstance(fmt, bytes):
        fmt = fmt.decode("latin-1")
    if not isinstance(fmt, str):
        return budget.size(fmt)
    if isinstance(values, tuple):
        items = list(values)
    elif isinstance(values, dict):
        items = list(values.values())
    else:
        items = [values]
    widest = max((budget.size(v) for v in items), default=0)
    fields = 0
    padding = 0
    for match in _PERCENT_SPEC.finditer(fmt):
        fields += 1
        for number in match.groups():
            if number == "*":  # the width comes from the values: the largest integer among them
                padding += max((v for v in items if type(v) is int), default=0)
            elif number is not None:
                padding += int(number)
    return len(fmt) + padding + fields * widest


def _spec_width(spec: str) -> int:
    """The largest number in a ``str.format`` spec: its width or its precision."""
    return max((int(d) for d in _DIGITS.findall(spec)), default=0)


def _int(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) else default


def _method_estimate(budget: Budget, method: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> int:
    """What a string's method will build, for the ones that can build more than their inputs;
    -1 for the rest (they are charged when they return)."""
    s: Any = method.__self__
    name = method.__name__
    if isinstance(s, int) and name == "to_bytes":
        return _int(args[0] if args else kw.get("length", 1), 1)
    is_text = isinstance(s, (str, bytes, bytearray))
    if not is_text:
        return -1
    text = str if isinstance(s, str) else (bytes, bytearray)  # Markup's take plain strings
    n = len(s)
    if name in ("ljust", "rjust", "center", "zfill"):
        return max(n, _int(args[0] if args else kw.get("width")))
    if name == "expandtabs":
        tab = "\t" if isinstance(s, str) else b"\t"
        return n + s.count(tab) * max(_int(args[0] if args else kw.get("tabsize", 8), 8), 0)
    if name == "replace" and len(args) >= 2:
        old, new = args[0], args[1]
        if not isinstance(old, text) or not isinstance(new, text):
            return -1
        count = _int(args[2] if len(args) > 2 else kw.get("count", -1), -1)
        times = s.count(old) if old else n + 1
        if count >= 0:
            times = min(times, count)
        return n + times * max(len(new) - len(old), 0)
    if name in ("split", "rsplit", "splitlines"):
        if name == "splitlines":
            parts = sum(s.count(c) for c in _LINE_BREAKS) if isinstance(s, str) else n
        else:
            sep = args[0] if args else kw.get("sep")
            if sep is None:
                ascii_str = isinstance(s, str) and s.isascii()
                parts = sum(s.count(c) for c in _ASCII_SPACE) if ascii_str else n // 2
            elif isinstance(sep, text) and sep:
                parts = s.count(sep)
            else:
                return -1
            most = _int(args[1] if len(args) > 1 else kw.get("maxsplit", -1), -1)
            if most >= 0:
                parts = min(parts, most)
        return n + (parts + 1) * ITEM
    if name == "translate" and args and isinstance(args[0], dict) and isinstance(s, str):
        longest = max((budget.size(v) for v in args[0].values()), default=1)
        return n * max(longest, 1)
    if name == "join" and args:
        items = args[0]
        return sum(budget.size(x) for x in items) + len(s) * len(items)
    return -1


# --- filters and globals -----------------------------------------------------------------------


def _too_slow(budget: Budget, value: Any, what: str) -> None:
    size = budget.size(value)
    if size > MAX_SLOW_INPUT:
        raise ChatTemplateError(
            f"the chat template exceeded its time budget: {what} of about {size:,} characters "
            f"(it takes at most {MAX_SLOW_INPUT:,})"
        )


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _pieces(text: str) -> int:
    """At most how many pieces splitting ``text`` at spaces and punctuation makes."""
    if not text.isascii():
        return len(text) + 1
    return sum(text.count(c) for c in _ASCII_SPACE + "-({[<") + 1


def _pre_words(name: str) -> Callable[..., None]:
    """For a filter that splits its text into a list of words on the way (``wordcount``,
    ``title``, ``striptags``): each word is a string object, :data:`ITEM` each."""

    def pre(b: Budget, value: Any, *args: Any, **kwargs: Any) -> None:
        text = _text(value)
        if text is not None:
            b.check(len(text) + 2 * _pieces(text) * ITEM, f"the {name} filter")

    return pre


def _pre_center(b: Budget, value: Any, width: Any = 80) -> None:
    b.check(max(b.size(value), _int(width)), "the center filter")


def _pre_indent(b: Budget, s: Any, width: Any = 4, first: Any = False, blank: Any = False) -> None:
    text = _text(s)
    lines = text.count("\n") + 1 if text is not None else b.size(s)
    indent = len(width) if isinstance(width, str) else _int(width)
    b.check(b.size(s) + lines * (indent + ITEM), "the indent filter")  # a list of the lines


def _pre_replace(b: Budget, s: Any, old: Any, new: Any, count: Any = None) -> None:
    text = _text(s)
    if text is None or not isinstance(old, str) or not isinstance(new, str):
        return
    times = text.count(old) if old else len(text) + 1
    if isinstance(count, int) and count >= 0:
        times = min(times, count)
    b.check(len(text) + times * max(len(new) - len(old), 0), "the replace filter")


def _pre_format(b: Budget, value: Any, *args: Any, **kwargs: Any) -> None:
    b.check(_percent_estimate(b, value, kwargs or args), "the format filter")


def _pre_batch(b: Budget, value: Any, linecount: Any, fill_with: Any = None) -> None:
    if fill_with is not None:
        b.check(_int(linecount) * ITEM, "the batch filter")


def _pre_wordwrap(
    b: Budget,
    s: Any,
    width: Any = 79,
    break_long_words: Any = True,
    wrapstring: Any = None,
    break_on_hyphens: Any = True,
) -> None:
    _too_slow(b, s, "the wordwrap filter")
    wrap = len(wrapstring) if isinstance(wrapstring, str) else 1
    b.check(b.size(s) * (1 + wrap), "the wordwrap filter")


def _pre_urlize(
    b: Budget,
    value: Any,
    trim_url_limit: Any = None,
    nofollow: Any = False,
    target: Any = None,
    rel: Any = None,
    extra_schemes: Any = None,
) -> None:
    _too_slow(b, value, "the urlize filter")
    per_link = 64 + len(str(target or "")) + len(str(rel or ""))
    size = b.size(value)
    b.check(3 * size + (size // 4 + 1) * per_link, "the urlize filter")


def _pre_pprint(b: Budget, value: Any) -> None:
    _too_slow(b, value, "the pprint filter")


def _pre_escape(b: Budget, value: Any) -> None:
    text = _text(value)
    if text is None:
        b.check(5 * b.size(value), "escaping")
    else:  # & < > " ' become entities of up to five characters
        b.check(len(text) + 4 * sum(text.count(c) for c in "&<>\"'"), "escaping")


_CONTROL_CHARS = [chr(c) for c in range(32)]


def _pre_tojson(b: Budget, value: Any, indent: Any = None) -> None:
    text = _text(value)
    if text is not None and not text.isprintable():  # a control character becomes \u00XX
        controls = sum(map(text.count, _CONTROL_CHARS))
        b.check(len(text) + 2 + 5 * controls + text.count('"') + text.count("\\"), "tojson")


def _pre_urlencode(b: Budget, value: Any) -> None:
    b.check(12 * b.size(value), "the urlencode filter")  # up to four UTF-8 bytes, each %XX


def _pre_materialize(name: str) -> Callable[..., None]:
    """For a filter that makes a list of its input's items (``list``, ``sort``...): a string
    becomes one item per character, :data:`ITEM` each."""

    def pre(b: Budget, value: Any, *args: Any, **kwargs: Any) -> None:
        if isinstance(value, (str, bytes, list, tuple, dict, range)):
            b.check(len(value) * ITEM, f"the {name} filter")

    return pre


_PRECHECKS: dict[str, Callable[..., None]] = {
    "center": _pre_center,
    "indent": _pre_indent,
    "replace": _pre_replace,
    "format": _pre_format,
    "batch": _pre_batch,
    "wordwrap": _pre_wordwrap,
    "urlize": _pre_urlize,
    "pprint": _pre_pprint,
    "urlencode": _pre_urlencode,
    "tojson": _pre_tojson,
    **{name: _pre_escape for name in ("e", "escape", "forceescape")},
    **{name: _pre_words(name) for name in ("wordcount", "title", "striptags")},
    **{name: _pre_materialize(name) for name in ("list", "sort", "slice", "groupby", "dictsort")},
}


# Filters that never make a string of a container they are given: the others (``string``,
# ``trim``, ``tojson``...) may, so their arguments are measured first.
_STRUCTURAL_FILTERS = frozenset(
    [
        *("batch", "dictsort", "groupby", "items", "list", "map", "max", "min", "reject"),
        *("rejectattr", "reverse", "select", "selectattr", "slice", "sort", "sum", "unique"),
    ]
)


# Filters that return a number or an object that exists already: nothing to bound (an iterator
# they consume, a filter's, is counted as it goes).
_PASSTHROUGH_FILTERS = frozenset(
    [
        *("abs", "attr", "count", "d", "default", "first", "float", "int", "last", "length"),
        *("random", "round"),
    ]
)


def _bounded_filter(name: str, f: Callable[..., Any]) -> Callable[..., Any]:
    """``f`` with its arguments' sizes bounded when it may print them, its precheck run, and
    its result charged."""
    if name in _PASSTHROUGH_FILTERS:
        return f
    precheck = _PRECHECKS.get(name)
    measure = name not in _STRUCTURAL_FILTERS
    # Jinja passes the environment, eval context or context first to a filter marked for it.
    skip = 1 if getattr(f, "jinja_pass_arg", None) is not None else 0
    what = f"the {name} filter"

    @functools.wraps(f)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        budget = _CURRENT.get() or current()
        if measure:
            for arg in args[skip:]:
                if type(arg) is not str:
                    budget.checked(arg, what)
            if kwargs:
                for arg in kwargs.values():
                    budget.checked(arg, what)
        if precheck is not None:
            # Arguments the filter itself will refuse, it refuses in its own words.
            with contextlib.suppress(TypeError):
                precheck(budget, *args[skip:], **kwargs)
        result = f(*args, **kwargs)
        if type(result) is str:  # Budget.produced, inlined for the common case
            size = len(result)
            budget.spent += size
            if size > budget.cap or budget.spent > budget.limit:
                budget.refuse(size, what, budget.spent)
            return result
        return budget.produced(result, what)

    return bounded


@pass_eval_context
def _join(eval_ctx: Any, value: Any, d: Any = "", attribute: Any = None) -> str:
    """Jinja's ``join``, its items counted and their total checked before the join."""
    budget = current()
    items = list(value)
    size = sum(budget.size(x) for x in items) + len(str(d)) * len(items)
    budget.check(size, "the join filter")
    return sync_do_join(eval_ctx, items, d, attribute)


@pass_environment
def _sum(environment: Any, iterable: Any, attribute: Any = None, start: Any = 0) -> Any:
    """Jinja's ``sum``; summing lists (``[[1], [2]]|sum(start=[])``) goes one ``+`` at a time,
    each charged: the builtin's copies are quadratic and cannot be interrupted."""
    if attribute is not None:
        iterable = map(make_attrgetter(environment, attribute), iterable)
    items = list(iterable)
    if isinstance(start, (str, bytes, bytearray)) or not any(
        isinstance(x, (list, tuple, str, bytes)) for x in [start, *items]
    ):
        return sum(items, start)
    total = start
    for item in items:
        total = environment.call_binop(None, "+", total, item)
    return total


def _tojson(value: Any, indent: Any = None) -> str:
    """``tojson`` as Hugging Face renders it: plain JSON, non-ASCII kept, no HTML escaping."""
    width = len(indent) if isinstance(indent, str) else _int(indent)
    if width > MAX_JSON_INDENT:
        raise ChatTemplateError(
            f"the chat template exceeded its size budget: tojson's indent of {width:,} "
            f"(at most {MAX_JSON_INDENT})"
        )
    return json.dumps(value, ensure_ascii=False, indent=indent)


def _lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:
    words = _int(n) * _int(max)
    if words > MAX_LIPSUM_WORDS:
        raise ChatTemplateError(
            f"the chat template exceeded its size budget: lipsum of {words:,} words "
            f"(at most {MAX_LIPSUM_WORDS:,})"
        )
    current().check(words * 12, "lipsum")
    return generate_lorem_ipsum(n=n, html=html, min=min, max=max)


def _strftime_now(fmt: str) -> str:
    if isinstance(fmt, str):
        current().check(16 * len(fmt), "strftime_now")  # %c is 24 characters from 2
    return datetime.now().strftime(fmt)


class TemplateRaised(Exception):
    """``raise_exception(...)`` inside a template: it refuses the messages on purpose."""


def _raise_exception(message: str) -> None:
    raise TemplateRaised(current().checked(message, "raise_exception"))


# --- the compiler: loops, ~ and slices through the environment ---------------------------------


def _outputs_per_step(loop: nodes.For) -> int:
    """How many pieces one step of ``loop`` outputs at most, its nested loops, macros and call
    blocks aside (they count their own)."""
    count = 0
    stack: list[nodes.Node] = [*loop.body, *loop.else_]
    while stack:
        node = stack.pop()
        if isinstance(node, nodes.Output):
            count += len(node.nodes)
        elif not isinstance(node, (nodes.For, nodes.Macro, nodes.CallBlock)):
            stack.extend(node.iter_child_nodes())
    return count


class _BoundedCodeGenerator(CodeGenerator):
    # Jinja allows no custom node types: the iterables of the for loops are remembered and
    # written wrapped when visited.

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._loop_iterables: dict[int, int] = {}

    def visit(self, node: nodes.Node, *args: Any, **kwargs: Any) -> Any:
        cost = self._loop_iterables.get(id(node))
        if cost is None:
            return super().visit(node, *args, **kwargs)
        self.write("environment.steps(")
        super().visit(node, *args, **kwargs)
        self.write(f", {cost})")
        return None

    def visit_For(self, node: nodes.For, frame: Frame) -> None:
        self._loop_iterables[id(node.iter)] = 1 + STEP * _outputs_per_step(node)
        super().visit_For(node, frame)

    @optimizeconst
    def visit_Add(self, node: nodes.BinExpr, frame: Frame) -> None:
        # a + b + c, the way templates glue a message together, as one call of the
        # environment's add (Jinja's would make one call, and one string, per +).
        operands: list[nodes.Expr] = []
        left: nodes.Expr = node
        while isinstance(left, nodes.Add):  # left-associative: ((a + b) + c)
            operands.append(left.right)
            left = left.left
        operands.append(left)
        self.write("environment.add(context, (")
        for operand in reversed(operands):
            self.visit(operand, frame)
            self.write(", ")
        self.write("))")

    # List, tuple and dict displays allocate: charged through the environment's literal.

    def visit_List(self, node: nodes.List, frame: Frame) -> None:
        self.write("environment.literal(")
        super().visit_List(node, frame)
        self.write(")")

    def visit_Dict(self, node: nodes.Dict, frame: Frame) -> None:
        self.write("environment.literal(")
        super().visit_Dict(node, frame)
        self.write(")")

    def visit_Tuple(self, node: nodes.Tuple, frame: Frame) -> None:
        if node.ctx != "load":  # a target: for a, b in ...
            super().visit_Tuple(node, frame)
            return
        self.write("environment.literal(")
        super().visit_Tuple(node, frame)
        self.write(")")

    @optimizeconst
    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        # As Jinja's, with the join in the environment: markup_join when autoescaping.
        if frame.eval_ctx.volatile:
            markup = "context.eval_ctx.autoescape"
        else:
            markup = repr(bool(frame.eval_ctx.autoescape))
        self.write("environment.join_values((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write(f"), {markup})")

    @optimizeconst
    def visit_Getitem(self, node: nodes.Getitem, frame: Frame) -> None:
        # Jinja slices in place; here the environment slices and charges the copy.
        if not isinstance(node.arg, nodes.Slice):
            super().visit_Getitem(node, frame)
            return
        self.write("environment.getslice(")
        self.visit(node.node, frame)
        self.write(", slice(")
        for i, part in enumerate((node.arg.start, node.arg.stop, node.arg.step)):
            if i:
                self.write(", ")
            if part is None:
                self.write("None")
            else:
                self.visit(part, frame)
        self.write("))")


# --- the environment ---------------------------------------------------------------------------


class _BoundedFormatter(SandboxedFormatter):
    """``str.format``, each field's width and value bounded and its text charged."""

    def format_field(self, value: Any, format_spec: str) -> Any:
        budget = current()
        budget.check(_spec_width(format_spec), "str.format")
        budget.checked(value, "str.format")
        text = super().format_field(value, format_spec)
        budget.spend(len(text), "str.format")
        return text


class _BoundedEscapeFormatter(_BoundedFormatter, SandboxedEscapeFormatter):
    pass


class TemplateSandbox(ImmutableSandboxedEnvironment):
    """Formatting only, under the deadline and the size budget of :func:`current`'s budget."""

    code_generator_class = _BoundedCodeGenerator
    intercepted_binops = frozenset(["+", "*", "%", "**"])

    def __init__(self, **options: Any) -> None:
        super().__init__(finalize=self._finalize, **options)
        self.filters["tojson"] = _tojson
        self.filters["join"] = _join
        self.filters["sum"] = _sum
        self.filters = {name: _bounded_filter(name, f) for name, f in self.filters.items()}
        self.globals["lipsum"] = _lipsum
        self.globals["raise_exception"] = _raise_exception
        self.globals["strftime_now"] = _strftime_now

    # Operators.

    def add(self, context: Any, operands: tuple[Any, ...]) -> Any:
        """``a + b + ...``: strings joined at once (the common case), anything else added
        left to right through :meth:`call_binop`."""
        size = 0
        for operand in operands:
            if type(operand) is not str:
                break
            size += len(operand)
        else:
            # Budget.spend without the clock: a + b repeats only inside a loop or a call,
            # which read it.
            budget = _CURRENT.get() or current()
            budget.spent += size
            if size > budget.cap or budget.spent > budget.limit:
                budget.refuse(size, "'+'", budget.spent)
            return "".join(operands)
        result = operands[0]
        for operand in operands[1:]:
            result = self.call_binop(context, "+", result, operand)
        return result

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        budget = current()
        what = repr(operator)
        # Adding or repeating lists copies pointers to items that exist: POINTER each.
        per_item = ITEM
        if operator == "+":
            for kind, cost in ((str, 1), (bytes, 1), (list, POINTER), (tuple, POINTER)):
                if isinstance(left, kind) and isinstance(right, kind):
                    per_item = cost
                    budget.check(cost * (len(left) + len(right)), what)
                    break
        elif operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, (str, bytes, list, tuple)) and isinstance(n, int):
                    per_item = 1 if isinstance(seq, (str, bytes)) else POINTER
                    budget.check(per_item * len(seq) * n, what)
            if isinstance(left, int) and isinstance(right, int):
                bits = left.bit_length() + right.bit_length()
                if bits > MAX_INT_BITS:
                    raise ChatTemplateError(
                        f"the chat template exceeded its size budget: '*' would make a "
                        f"{bits:,}-bit number (at most {MAX_INT_BITS:,})"
                    )
        elif operator == "**":
            if (
                isinstance(left, int)
                and isinstance(right, int)
                and abs(left) > 1
                and right * abs(left).bit_length() > MAX_INT_BITS
            ):
                raise ChatTemplateError(
                    "the chat template exceeded its size budget: '**' would make a number "
                    f"of more than {MAX_INT_BITS:,} bits"
                )
        elif operator == "%" and isinstance(left, (str, bytes)):
            budget.check(_percent_estimate(budget, left, right), "'%' formatting")
        return budget.produced(self.binop_table[operator](left, right), what, per_item)

    def join_values(self, values: tuple[Any, ...], markup: bool) -> str:
        """``a ~ b ~ ...``."""
        budget = current()
        size = 0
        for value in values:
            size += len(value) if type(value) is str else budget.size(value)
        budget.spend(size, "'~'")
        return markup_join(values) if markup else str_join(values)

    def concat(self, parts: Iterable[str]) -> str:  # type: ignore[override]
        """Joins the output of a macro, a block, a ``{% set %}`` or ``{% filter %}`` block."""
        parts = parts if isinstance(parts, list) else list(parts)
        current().spend(sum(map(len, parts)), "joining a macro's or block's output")
        return "".join(parts)

    def _finalize(self, value: Any) -> Any:
        """Each ``{{ ... }}``, before it is made a string."""
        if type(value) is str:
            return value
        budget = current()
        budget.spend(budget.size(value), "printing a value")
        return value

    # Loops, slices and calls.

    def steps(self, iterable: Any, cost: int = 1) -> _Steps:
        return _Steps(iterable, current(), cost)

    def literal(self, value: Any) -> Any:
        """A list, tuple or dict the template writes out (``[ns.items, x]``)."""
        return current().produced(value, "a list or dict literal", POINTER)

    def getslice(self, obj: Any, where: slice) -> Any:
        return current().produced(obj[where], "a slice", POINTER)

    def call(self, context: Any, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        budget = current()
        budget.tick()
        what = getattr(obj, "__qualname__", None) or type(obj).__name__
        if isinstance(obj, (types.BuiltinMethodType, types.MethodType)) and isinstance(
            obj.__self__, (str, bytes, bytearray, int)
        ):
            # A method of a string (Markup's are Python functions) or a number: it may print
            # its arguments, and some build more than they are given.
            for arg in args:
                budget.checked(arg, what)
            for arg in kwargs.values():
                budget.checked(arg, what)
            joining = obj.__name__ == "join" and not isinstance(obj.__self__, int)
            if joining and args and not isinstance(args[0], (list, tuple)):
                args = (list(args[0]), *args[1:])  # counted as it is consumed, if a filter's
            size = _method_estimate(budget, obj, args, kwargs)
            if size >= 0:
                budget.check(size, what)
        elif isinstance(obj, Macro):
            budget.spend(ITEM, "a macro call")  # its frame and its output's list
        elif isinstance(obj, LoopContext) and args:
            # A recursive loop's next level, at the cost per step of the level above.
            above = getattr(obj, "_iterable", None)
            cost = above.cost if isinstance(above, _Steps) else 1
            args = (self.steps(args[0], cost), *args[1:])
        result = super().call(context, obj, *args, **kwargs)
        if isinstance(obj, (Macro, LoopContext, BlockReference)):
            return result  # their output was charged when it was joined (concat)
        if result is getattr(obj, "__self__", None) or any(result is a for a in args):
            return result
        return budget.produced(result, what)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        # The sandbox's, with formatters that bound each field.
        if not isinstance(
            value, (types.MethodType, types.BuiltinMethodType)
        ) or value.__name__ not in ("format", "format_map"):
            return None
        f_self = value.__self__
        if not isinstance(f_self, str):
            return None
        str_type = type(f_self)
        is_format_map = value.__name__ == "format_map"
        formatter: SandboxedFormatter
        if isinstance(f_self, Markup):
            formatter = _BoundedEscapeFormatter(self, escape=f_self.escape)
        else:
            formatter = _BoundedFormatter(self)

        def wrapper(*args: Any, **kwargs: Any) -> str:
            if is_format_map:
                if kwargs:
                    raise TypeError("format_map() takes no keyword arguments")
                if len(args) != 1:
                    raise TypeError(f"format_map() takes exactly one argument ({len(args)} given)")
                kwargs = args[0]
                args = ()
            return str_type(formatter.vformat(f_self, args, kwargs))

        return functools.update_wrapper(wrapper, value)


def check_source(env: TemplateSandbox, source: str) -> None:
    """Refuses a source too long or too deeply bracketed to compile safely."""
    if len(source) > MAX_SOURCE_CHARS:
        raise ChatTemplateError(
            f"the chat template is {len(source):,} characters long; at most "
            f"{MAX_SOURCE_CHARS:,} are compiled"
        )
    depth = 0
    for _, kind, value in env.lex(source):
        if kind != "operator":
            continue
        if value in "([{":
            depth += 1
            if depth > MAX_NESTING:
                raise ChatTemplateError(
                    f"the chat template nests brackets more than {MAX_NESTING} deep"
                )
        elif value in ")]}":
            depth -= 1
