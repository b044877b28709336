"""Sphinx configuration for elmstate's documentation.

Build and check, from the repository root (``pip install '.[docs]'`` first):

    sphinx-build -W --keep-going -n -b html docs docs/_build/html
    sphinx-build -W --keep-going -n -b doctest docs docs/_build/doctest

The doctest builder runs every example on every page and compares what it
prints with the output shown beside it, so the pages cannot drift from the code.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

import elmstate
import elmstate.typing
from elmstate import _core_py

project = "elmstate"
author = "The elmstate developers"
copyright = "The elmstate developers"
release = elmstate.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.doctest",
]

source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]

# MyST: ```{directive} fences and :::{note} blocks. Links between pages name
# explicit (label)= targets, which are chosen equal to their heading's GitHub
# slug, so docs/contract.md#buffer-retention works on GitHub and on the site.
# (Generated heading anchors are off: they would clash with those labels.)
myst_enable_extensions = ["colon_fence"]

html_theme = "furo"
html_title = f"elmstate {release}"

# Every reference must resolve (-n). Names from the standard library are not
# linked (no intersphinx: CI builds offline), so they are listed here.
nitpicky = True
nitpick_ignore_regex = [
    (r"py:(class|obj|data)", r"(typing|collections\.abc|types|os|threading)\..*"),
    (r"py:(class|obj|data)", r"(Any|Callable|Iterable|Sequence|NoReturn|Optional|None)"),
    (r"py:(class|obj|data)", r"(int|float|str|bytes|bool|object|list|tuple|dict|type)"),
    (r"py:(class|obj|exc)", r"(Exception|BaseException|LookupError|RuntimeError|TimeoutError)"),
    (r"py:(class|obj|exc)", r"(TypeError|ValueError|KeyboardInterrupt|SystemExit)"),
]

# The API reference: autodoc imports the public names from ``elmstate``, so on a
# normal install it sees the compiled core, on which the examples run too. The
# compiled objects have the same parameters as the pure ones but no annotations
# (and docstrings written for the .pyx reader), so the signature and docstring
# of each object of the compiled core are taken from its pure-Python twin, the
# typed reference. Annotations are shown as the source writes them (every module
# uses ``from __future__ import annotations``), the names below qualified so
# that they link to their entries.
autodoc_default_options = {"members": True, "undoc-members": False}
autodoc_member_order = "groupwise"
autodoc_typehints = "signature"
python_use_unqualified_type_names = True  # Init[Model, Msg], linked, not elmstate.typing.Init[...]

QUALIFY = {
    "Context": "elmstate.Context",
    "Buffer": "elmstate.Buffer",
    "BufferConsumer": "elmstate.BufferConsumer",
    "CleanerNotification": "elmstate.CleanerNotification",
}
for _name in elmstate.typing.__all__:
    QUALIFY[_name] = QUALIFY["_typing." + _name] = "elmstate.typing." + _name
# Names with no public home, shown unlinked: tag's and new_command's own type
# variables, the variance twins of T in the protocols, the handle that
# add_done_callback returns (only ever passed back), and Context as the type
# aliases of elmstate.typing spell it (autodoc prints their values itself).
nitpick_ignore_regex.append(
    (r"py:(class|obj|data)", r"(A|B|_T_co|_T_contra|_DoneCallback|Context)")
)
# The clients' own classes (no intersphinx), and elmstate.redis's private
# aliases of callables and ids (their shapes are in the docstrings).
nitpick_ignore_regex.append(
    (
        r"py:(class|obj|data)",
        r"(redis\.Redis|redis\.asyncio\.Redis|psycopg.*|Encode|Decode|EntryId)",
    )
)


def _twin(name: str) -> Any:
    """The pure core's object for the public dotted ``name``, or None."""
    parts = name.split(".")
    if parts[0] != "elmstate" or len(parts) < 2:
        return None
    obj: Any = _core_py
    for part in parts[1:]:
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def _compiled(obj: Any) -> bool:
    owner = getattr(obj, "__objclass__", obj)
    return getattr(owner, "__module__", "") == "elmstate._core"


def _signature(app, what, name, obj, options, signature, return_annotation):  # type: ignore[no-untyped-def]
    if what not in ("class", "function", "method"):
        return None
    source = _twin(name) if _compiled(obj) else obj
    if source is None:
        return None
    try:
        if inspect.isclass(source):
            if getattr(source, "_is_protocol", False):
                return "", None  # a Protocol: its (*args, **kwargs) says nothing
            if "__init__" not in vars(source):
                return None
            sig = inspect.signature(source.__init__)
            bound = True
        else:
            sig = inspect.signature(source)
            bound = what == "method" and not isinstance(
                inspect.getattr_static(_owner(name), name.rsplit(".", 1)[1], None), staticmethod
            )
    except (TypeError, ValueError):
        return None
    params = [_Shown.annotate(p) for p in sig.parameters.values()]
    if bound and params:
        params = params[1:]
    returns = sig.return_annotation
    text = str(sig.replace(parameters=params, return_annotation=inspect.Signature.empty))
    if what == "class" or returns is inspect.Signature.empty:
        return text, None
    return text, repr(_Shown(returns))


class _Shown:
    """An annotation as the source writes it: unquoted, its names qualified."""

    def __init__(self, annotation: Any) -> None:
        text = annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)
        self.text = re.sub(r"\b[A-Za-z_][\w.]*", lambda m: QUALIFY.get(m[0], m[0]), text)

    def __repr__(self) -> str:
        return self.text

    @classmethod
    def annotate(cls, param: inspect.Parameter) -> inspect.Parameter:
        if param.annotation is inspect.Parameter.empty:
            return param
        return param.replace(annotation=cls(param.annotation))


def _owner(name: str) -> Any:
    obj: Any = elmstate
    for part in name.split(".")[1:-1]:
        obj = getattr(obj, part)
    return obj


def _docstring(app, what, name, obj, options, lines):  # type: ignore[no-untyped-def]
    twin = _twin(name)
    if twin is None or not _compiled(obj):
        return
    doc = inspect.getdoc(twin)
    if doc:
        lines[:] = doc.splitlines()


# The doctest builder: each page's examples share one namespace per group.
doctest_global_setup = """
import elmstate
"""


def setup(app):  # type: ignore[no-untyped-def]
    app.connect("autodoc-process-signature", _signature)
    app.connect("autodoc-process-docstring", _docstring)
