"""Reference text for the library functions an idea names: the signature and the docstring's
summary, parameters and return value, read from the installed library (numpydoc sections, as scipy
and numpy write them, or Google-style ``Args:``, as torch does).

Why: a small model told to "use scipy.optimize.linprog" writes calls in the wrong shape (a Python
function where the API takes a coefficient array, constraints as one function where it takes a
list of dicts), and those programs crash. The library's own documentation, in the prompt next to
the idea, is what a programmer would read first. It is taken from the installed package, so it
holds no answer to the task (nothing here is written by dgm or the evaluator).

Ideas come from the evaluator and the campaign file (trusted), never from the model; a name is
imported only when its top-level package is already installed, and any failure gives no reference.
"""

from __future__ import annotations

import ast
import functools
import importlib
import importlib.util
import inspect
import re
import textwrap

#: a dotted name of at least three parts (package.module.function): "scipy.optimize.minimize"
NAME_RE = re.compile(r"\b([A-Za-z_]\w*(?:\.[A-Za-z_]\w*){2,})\b")
#: the most characters of one function's reference text (scipy's minimize, described: 2,635)
LIMIT = 3200
#: numpydoc section headers: a title line, then a dashed underline
SECTION_RE = re.compile(r"\n([A-Z][\w ]*)\n-{3,}\n")
#: Google-style section headers (torch's docstrings): a title and a colon, the entries indented below
GOOGLE_RE = re.compile(r"^(Args|Arguments|Parameters|Keyword [Aa]rg(?:ument)?s|Returns?):[ \t]*$", re.M)
#: a Google-style entry's first line: ``name (type): description`` (the type optional)
GOOGLE_ENTRY_RE = re.compile(r"^(\*{0,2}\w+)\s*(?:\(([^)]*)\))?\s*:\s*(.*)$")


def references(idea: str, *, per_name: int = LIMIT, most: int = 2) -> str:
    """The reference text of up to ``most`` callables named in ``idea`` (empty when none resolve).
    Parameters the idea's words name (``constraints``, ``bounds``) are described, as are the
    required ones; the others are listed by name and type only, so the text stays short."""
    out: list[str] = []
    words = frozenset(re.findall(r"[A-Za-z_]\w*", idea or ""))
    for name in dict.fromkeys(NAME_RE.findall(idea or "")):
        text = reference(name, words, per_name)
        if text:
            out.append(text)
        if len(out) == most:
            break
    return "\n\n".join(out)


@functools.lru_cache(maxsize=64)
def reference(name: str, words: frozenset[str] = frozenset(), limit: int = LIMIT) -> str:
    """``name``'s signature, summary, parameters and first return entry, within ``limit``
    characters; empty when it is not an importable callable with a docstring. A parameter is
    described when it has no default or is one of ``words``; the others get one line."""
    obj = _resolve(name)
    if obj is None or not callable(obj):
        return ""
    doc = inspect.getdoc(obj) or ""
    if not doc:
        return ""
    short = name.rsplit(".", 1)[-1]
    try:
        sig = inspect.signature(obj)
        signature = str(sig)
        required = {n for n, p in sig.parameters.items() if p.default is inspect.Parameter.empty}
    except (TypeError, ValueError):
        signature, required = _signature_line(doc, short)
    sections = _sections(_plain(doc))
    # a compiled function's docstring opens with its signature: the summary is the next paragraph
    summary = [p for p in sections[""].split("\n\n") if not p.startswith(short + "(")]
    lines = [f"`{name}{signature}`", " ".join((summary or [""])[0].split())]
    if "parameters" in sections:
        lines += ["Parameters:", *_entries(sections["parameters"], {**dict.fromkeys(required, 400), **dict.fromkeys(words, 900)})]
    if "returns" in sections:
        lines += ["Returns:", *_entries(sections["returns"], None)[:1]]
    text = "\n".join(lines)
    return text if len(text) <= limit else text[: limit - 2].rsplit("\n", 1)[0] + "\n…"


def _signature_line(doc: str, short: str) -> tuple[str, set[str]]:
    """A compiled function (``torch.clamp``) has no introspectable signature; its docstring's first
    line often is one (``clamp(input, min=None, max=None, *, out=None) -> Tensor``). Returns that
    signature and its parameters without a default, or ``("(...)", set())``."""
    first = doc.split("\n", 1)[0]
    if not first.startswith(short + "("):
        return "(...)", set()
    signature = first[len(short):]
    return signature, {p for p in _top_level_parameters(signature) if p.isidentifier()}


def _top_level_parameters(signature: str) -> list[str]:
    """The parameters of ``(a, b=(1, 2), *, c='x, y') -> T`` split at the commas outside brackets and
    quotes (``["a", "b=(1, 2)", "*", "c='x, y'"]``): a default holding a comma is one parameter."""
    params, depth, quote, cur = [], 0, "", ""
    for ch in signature[1:]:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            if depth == 0:  # the closing parenthesis of the signature
                break
            depth -= 1
        elif ch == "," and depth == 0:
            params.append(cur.strip())
            cur = ""
            continue
        cur += ch
    return [*params, cur.strip()] if cur.strip() or params else []


def _resolve(name: str):
    parts = name.split(".")
    try:
        if importlib.util.find_spec(parts[0]) is None:
            return None
    except (ImportError, ValueError):
        return None
    # the longest importable module prefix, then attributes (scipy.optimize + minimize)
    for cut in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except Exception:  # noqa: BLE001 - any import failure means no reference, not a broken prompt
            continue
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return None
        return obj
    return None


def _sections(doc: str) -> dict[str, str]:
    """The docstring's summary ("") and its sections by lower-case title, numpydoc's as they are;
    a docstring without numpydoc parameters has its Google-style ones read instead."""
    parts = SECTION_RE.split("\n" + doc)
    out = {"": parts[0].strip()}
    for title, body in zip(parts[1::2], parts[2::2]):
        out[title.strip().lower()] = body
    if "parameters" not in out:
        google = _google_sections(doc)
        out.update(google)
        if google:
            out[""] = GOOGLE_RE.split(doc)[0].strip()
    return out


def _google_sections(doc: str) -> dict[str, str]:
    """Google-style ``Args:`` (with ``Keyword args:``) and ``Returns:``, rewritten as numpydoc
    entries (``name : type`` then the indented description) so that one reader serves both."""
    out: dict[str, list[str]] = {}
    for m in GOOGLE_RE.finditer(doc):
        block = []
        for line in doc[m.end():].split("\n")[1:]:
            if line.strip() and not line[0].isspace():
                break  # the section ends at the first line that is not indented
            block.append(line)
        returns = m.group(1).lower().startswith("return")
        entries = out.setdefault("returns" if returns else "parameters", [])
        for item in re.split(r"\n(?=\S)", textwrap.dedent("\n".join(block)).strip()):
            head, _, rest = item.partition("\n")
            if returns:  # "Tensor: the loss" reads as numpydoc's "Tensor" and its description
                kind, colon, text = head.partition(":")
                name, kind, text = (kind.strip(), None, text) if colon else (head.strip(), None, "")
            elif entry := GOOGLE_ENTRY_RE.match(head.strip()):
                name, kind, text = entry.groups()
            else:
                continue
            heading = f"{name} : {kind}" if kind else name
            entries.append(heading + "\n    " + text.strip() + ("\n" + rest if rest else ""))
    return {title: "\n".join(items) for title, items in out.items() if items}


def _plain(doc: str) -> str:
    """Sphinx roles as their text (``:ref:`'highs' <optimize.linprog-highs>``` -> ``'highs'``),
    and a link's bare "(see here)" left out."""
    doc = re.sub(r"\s*:\w+:`\(see here\)\s*<[^>]*>`", "", doc)
    return re.sub(r":\w+:`([^`<]*?)\s*(?:<[^>]*>)?`", r"\1", doc)


def _entries(body: str, described: dict[str, int] | None, per: int = 300) -> list[str]:
    """One line per numpydoc entry (``name : type`` then an indented description): the name and
    type, then, for a name in ``described`` (name -> characters; None: every name, ``per`` each),
    the description's prose (literal blocks after ``::`` left out), clipped."""
    lines = []
    for item in re.split(r"\n(?=\S)", body.strip()):
        head, _, rest = item.partition("\n")
        if described is not None:
            per = described.get(head.split(":")[0].strip(), 0)
            if not per:
                lines.append(f"- {head.strip()}")
                continue
        prose, skip = [], False
        for para in inspect.cleandoc(rest).split("\n\n"):
            if skip and para.startswith((" ", "\t")):
                continue  # the indented literal block of a "::" paragraph
            skip = para.rstrip().endswith("::")
            prose.append(" ".join(para.replace("::", ":").split()))
        text = " ".join(p for p in prose if p)
        if len(text) > per:
            text = text[:per].rsplit(" ", 1)[0] + " …"
        lines.append(f"- {head.strip()}: {text}" if text else f"- {head.strip()}")
    return lines


def call_references(program: str, line: int, *, per_name: int = LIMIT, most: int = 1) -> str:
    """The reference text of the library functions called by the statement on ``line`` of
    ``program`` (where a crash was raised): a call that misuses an API, such as a Python
    function passed where ``linprog`` takes a coefficient array, gets that API's documentation in
    the fix request. Names are resolved through the program's imports (``np.concatenate`` ->
    ``numpy.concatenate``); the keywords the call passes are described, as are required ones."""
    try:
        tree = ast.parse(program)
    except (SyntaxError, ValueError):
        return ""
    imported = _imports(tree)
    # the simple statement that spans the line (simple statements do not nest)
    stmts = [s for s in ast.walk(tree) if isinstance(s, ast.stmt) and not isinstance(s, COMPOUND)
             and s.lineno <= line <= (s.end_lineno or s.lineno)]
    if not stmts:
        return ""
    out: list[str] = []
    for call in (c for c in ast.walk(stmts[0]) if isinstance(c, ast.Call)):
        head, dot, rest = _dotted(call.func).partition(".")
        if head not in imported:
            continue  # a builtin, a local function or a method of a value: not a library's API
        name = imported[head] + dot + rest
        words = frozenset(k.arg for k in call.keywords if k.arg)
        text = reference(name, words, per_name)
        if text and text not in out:
            out.append(text)
        if len(out) == most:
            break
    return "\n\n".join(out)


#: statements that hold other statements (the crash's own statement is a simple one)
COMPOUND = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.If, ast.For, ast.AsyncFor, ast.While,
            ast.With, ast.AsyncWith, ast.Try, ast.Match) + ((ast.TryStar,) if hasattr(ast, "TryStar") else ())


def _imports(tree: ast.Module) -> dict[str, str]:
    """Local name -> the dotted name it stands for, from the program's import statements."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                names[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for a in node.names:
                names[a.asname or a.name] = f"{node.module}.{a.name}"
    return names


def _dotted(func: ast.expr) -> str:
    """``a.b.c`` for a call of a plain dotted name, else empty (a call of a call, a subscript)."""
    parts = []
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if not isinstance(func, ast.Name):
        return ""
    return ".".join([func.id, *reversed(parts)])
