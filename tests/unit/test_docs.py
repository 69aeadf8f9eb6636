"""The docs stay true: what the code reads is in the configuration reference and nothing there is unknown
to the code; the README's commands are make targets; links resolve; nothing points outside the repository.

The code is read, not run (``ast`` over the sources), except the DAG files, whose params come from a
DagBag. Each failure names the missing or unknown item and where it should go.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

from sandbox.env import REPO

DOCS = REPO / "docs"
REFERENCE = DOCS / "configuration.md"
README = REPO / "README.md"
README_MAX_BYTES = 12 * 1024
ENV_SCANNED = ("plugins", "dags", "scripts", "sandbox", "tests")  # benchmarks set up their own environment
ENV_NOT_DOCUMENTED = {"PATH"}  # read only to extend it for child processes


def markdown_files() -> list[Path]:
    return [README, *sorted(DOCS.rglob("*.md"))]


def python_files(*folders: str) -> list[Path]:
    return [p for folder in folders for p in sorted((REPO / folder).rglob("*.py")) if ".venv" not in p.parts]


def shown(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


# --- the reference, as markdown -----------------------------------------------------------------------


def section(text: str, heading: str) -> str:
    """The body of the ``## heading`` section (up to the next ``## ``)."""
    match = re.search(rf"^## {re.escape(heading)}\s*$(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"{shown(REFERENCE)} has no '## {heading}' section"
    return match.group(1)


def table_rows(text: str) -> list[list[str]]:
    """The body rows of every markdown table in ``text``, as lists of stripped cells."""
    rows = []
    for block in re.findall(r"(?:^\|.*\|\s*$\n?)+", text, re.M):
        lines = block.strip().splitlines()
        rows += [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in lines[2:]]
    return rows


def first_code(cell: str) -> str | None:
    match = re.match(r"`([^`]+)`", cell)
    return match.group(1) if match else None


def subsections(text: str) -> dict[str, str]:
    """``### heading`` → body, keyed by the heading's first `code` span (else its text)."""
    out = {}
    for heading, body in re.findall(r"^### (.+?)\s*$(.*?)(?=^### |\Z)", text, re.M | re.S):
        key = re.search(r"`([^`]+)`", heading)
        out[key.group(1) if key else heading] = body
    return out


# --- environment variables -----------------------------------------------------------------------------


def _constants(tree: ast.AST) -> dict[str, str]:
    return {
        node.targets[0].id: node.value.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign)
        and len(node.targets) == 1
        and isinstance(node.targets[0], ast.Name)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    }


def _is_os_environ(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Attribute)
        and node.attr == "environ"
        and isinstance(node.value, ast.Name)
        and node.value.id == "os"
    )


def env_reads(path: Path) -> set[str]:
    """Variables ``path`` reads: ``os.environ.get/setdefault(X)``, ``os.environ[X]``, ``os.getenv(X)``,
    with X a string or a module constant."""
    tree = ast.parse(path.read_text(), str(path))
    constants = _constants(tree)

    def name(arg: ast.AST) -> str | None:
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            return arg.value
        if isinstance(arg, ast.Name):
            return constants.get(arg.id)
        return None

    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args and isinstance(node.func, ast.Attribute):
            func = node.func
            environ_get = func.attr in ("get", "setdefault") and _is_os_environ(func.value)
            getenv = func.attr == "getenv" and isinstance(func.value, ast.Name) and func.value.id == "os"
            if environ_get or getenv:
                found.add(name(node.args[0]))
        elif (
            isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load) and _is_os_environ(node.value)
        ):
            found.add(name(node.slice))
    return found - {None}


def code_env_vars() -> dict[str, set[str]]:
    """Variable → the files that read it (Python sources, and docker-compose.yaml's ``${VAR}``)."""
    readers: dict[str, set[str]] = {}
    for path in python_files(*ENV_SCANNED):
        if path.resolve() == Path(__file__).resolve():
            continue
        for var in env_reads(path):
            readers.setdefault(var, set()).add(shown(path))
    compose = REPO / "docker-compose.yaml"
    for var in re.findall(r"(?<!\$)\$\{([A-Z][A-Z0-9_]*)", compose.read_text()):
        readers.setdefault(var, set()).add(shown(compose))
    return readers


def documented_env_vars() -> set[str]:
    text = section(REFERENCE.read_text(), "Environment variables")
    return {name for row in table_rows(text) if (name := first_code(row[0]))}


def test_env_scanner_sees_the_ways_code_reads_variables(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import os\nNAME = 'C_VAR'\nos.environ.get('A_VAR')\nos.environ['B_VAR']\nos.environ.get(NAME)\n"
        "os.getenv('D_VAR', '')\nos.environ.setdefault('E_VAR', '1')\nos.environ['SET_ONLY'] = '1'\n"
    )
    assert env_reads(probe) == {"A_VAR", "B_VAR", "C_VAR", "D_VAR", "E_VAR"}


def test_every_environment_variable_the_code_reads_is_documented():
    documented = documented_env_vars()
    missing = {
        var: sorted(files)
        for var, files in code_env_vars().items()
        if var not in documented and var not in ENV_NOT_DOCUMENTED
    }
    assert not missing, (
        f"environment variables read by the code but missing from the tables of {shown(REFERENCE)}, "
        f"'## Environment variables': {missing}"
    )


def test_every_documented_retl_variable_is_read_by_the_code():
    read = set(code_env_vars())
    unknown = sorted(v for v in documented_env_vars() if v.startswith("RETL_") and v not in read)
    assert not unknown, f"{shown(REFERENCE)} documents variables no code reads: {unknown}"


# --- connection extras ---------------------------------------------------------------------------------

# Which reference sections document the extras each module reads (a read extra must be in one of them).
# A module that reads extras and is not listed here fails test_every_module_reading_extras_is_mapped.
TRANSPORT = "Transport extras of every HTTP vendor connection"
EXTRA_SECTIONS = {
    "plugins/reverse_etl/warehouse.py": ("retl_warehouse",),
    "plugins/reverse_etl/store.py": ("retl_state",),
    "plugins/reverse_etl/hooks/base.py": (TRANSPORT,),
    "plugins/reverse_etl/hooks/voucherify.py": ("voucherify_default", TRANSPORT),
    "plugins/reverse_etl/operators/voucherify.py": ("voucherify_default", TRANSPORT),
    "plugins/reverse_etl/hooks/connectif.py": ("connectif_default", TRANSPORT),
    "plugins/reverse_etl/operators/connectif.py": ("connectif_default", TRANSPORT),
    "plugins/reverse_etl/hooks/salesfire.py": ("salesfire_default", TRANSPORT),
    "plugins/reverse_etl/operators/salesfire.py": ("salesfire_default", TRANSPORT),
    "plugins/reverse_etl/hooks/datatalks.py": ("salesmanago_default", TRANSPORT),
    "plugins/reverse_etl/operators/salesmanago.py": ("salesmanago_default", TRANSPORT),
    "plugins/reverse_etl/hooks/splio.py": ("splio_referral_default",),
    "plugins/reverse_etl/operators/splio.py": ("splio_referral_default",),
    "plugins/reverse_etl/notifiers.py": ("RETL_ALERT_WEBHOOK_CONN_ID",),
}
# Connections whose hook is (or wraps) a provider's: extras documented there may be read by that module.
PROVIDER_READERS = {
    "splio_referral_default": ("airflow.providers.ssh.hooks.ssh", "airflow.providers.sftp.hooks.sftp"),
    "RETL_ALERT_SMTP_CONN_ID": ("airflow.providers.smtp.hooks.smtp",),
}


def extra_reads(path: Path) -> set[str]:
    """Extras ``path`` reads: ``x.extra("n", ...)``, ``typed_extra(extras, "n", ...)``, ``x.extras.get("n")``,
    ``x.extra_dejson.get("n")`` and ``.get("n")`` on a name bound to ``...extra_dejson``."""
    tree = ast.parse(path.read_text(), str(path))
    bound = {
        target.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign)
        and isinstance(node.value, ast.Attribute)
        and node.value.attr in ("extra_dejson", "extras")
        for target in node.targets
        if isinstance(target, ast.Name)
    }

    def literal(arg: ast.AST) -> str | None:
        return arg.value if isinstance(arg, ast.Constant) and isinstance(arg.value, str) else None

    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args:
            func = node.func
            if isinstance(func, ast.Name) and func.id == "typed_extra" and len(node.args) > 1:
                found.add(literal(node.args[1]))
            elif isinstance(func, ast.Attribute) and func.attr == "extra":
                found.add(literal(node.args[0]))
            elif isinstance(func, ast.Attribute) and func.attr == "get":
                owner = func.value
                if (isinstance(owner, ast.Attribute) and owner.attr in ("extras", "extra_dejson")) or (
                    isinstance(owner, ast.Name) and owner.id in bound
                ):
                    found.add(literal(node.args[0]))
        elif (
            isinstance(node, ast.Subscript)
            and isinstance(node.value, ast.Attribute)
            and node.value.attr in ("extras", "extra_dejson")
        ):
            found.add(literal(node.slice))
    return found - {None}


def documented_extras() -> dict[str, set[str]]:
    connections = subsections(section(REFERENCE.read_text(), "Connections"))
    out = {}
    for key, body in connections.items():
        tables = re.findall(r"(?:^\|.*\|\s*$\n?)+", body, re.M)
        names = set()
        for table in tables:
            header = [c.strip() for c in table.splitlines()[0].strip().strip("|").split("|")]
            if header[0] == "extra":
                names |= {n for row in table_rows(table) if (n := first_code(row[0]))}
        out[key] = names
    return out


def test_extra_scanner_sees_the_ways_hooks_read_extras(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(
        "self.extra('a', 1)\nhook.extras.get('b')\nconn.extra_dejson.get('c')\ntyped_extra(x, 'd', 1, int, 'c')\n"
        "extra = conn.extra_dejson\nextra.get('e')\nself.extras['f']\nsettings.get('not_an_extra')\n"
    )
    assert extra_reads(probe) == {"a", "b", "c", "d", "e", "f"}


def test_every_module_reading_extras_is_mapped():
    unmapped = {
        shown(p): sorted(extra_reads(p))
        for p in python_files("plugins", "dags")
        if extra_reads(p) and shown(p) not in EXTRA_SECTIONS
    }
    assert not unmapped, (
        f"modules read connection extras but test_docs.EXTRA_SECTIONS does not say whose: {unmapped}"
    )


def test_every_connection_extra_the_code_reads_is_documented():
    documented = documented_extras()
    missing = []
    for module, keys in EXTRA_SECTIONS.items():
        for key in keys:
            assert key in documented, f"{shown(REFERENCE)} has no '### ... `{key}` ...' connection section"
        there = set().union(*(documented[key] for key in keys))
        missing += [
            f"{keys[0]}: {name} (read by {module})" for name in sorted(extra_reads(REPO / module) - there)
        ]
    assert not missing, f"connection extras missing from the extras tables of {shown(REFERENCE)}: {missing}"


def test_every_documented_extra_is_read_by_the_code():
    import importlib.util

    read: dict[str, set[str]] = {}
    for module, keys in EXTRA_SECTIONS.items():
        for key in keys:
            read.setdefault(key, set()).update(extra_reads(REPO / module))
    unknown = []
    for key, names in documented_extras().items():
        provider_source = "".join(  # read, not imported: a provider's import takes seconds
            Path(importlib.util.find_spec(m).origin).read_text() for m in PROVIDER_READERS.get(key, ())
        )
        for name in sorted(names - read.get(key, set())):
            if f'"{name}"' not in provider_source:
                unknown.append(f"{key}: {name}")
    assert not unknown, f"{shown(REFERENCE)} documents extras no code reads: {unknown}"


# --- DAG params ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dags():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.import_errors == {}
    return bag.dags


def documented_params() -> dict[str, tuple[str, str]]:
    """param → (its DAGs cell, its default cell)."""
    rows = table_rows(section(REFERENCE.read_text(), "DAG params"))
    return {name: (row[1], row[2]) for row in rows if (name := first_code(row[0]))}


def test_every_dag_param_is_documented_with_its_dags_and_default(dags):
    documented = documented_params()
    problems = []
    for name in sorted({p for dag in dags.values() for p in dag.params}):
        having = {dag_id for dag_id, dag in dags.items() if name in dag.params}
        if name not in documented:
            problems.append(f"{name} (of {sorted(having)}) is missing")
            continue
        dags_cell, default_cell = documented[name]
        said = set(dags) if dags_cell == "every DAG" else set(re.findall(r"`([a-z_]+_sync)`", dags_cell))
        if said != having:
            problems.append(f"{name}: the DAGs column says {sorted(said)}, the DAGs are {sorted(having)}")
        if default := first_code(default_cell):
            try:
                expected = json.loads(default)
            except ValueError:
                continue
            for dag_id in having:
                actual = dags[dag_id].params.get_param(name).value
                if actual != expected:
                    problems.append(f"{name}: default `{default}` documented, {dag_id} has {actual!r}")
    assert not problems, f"{shown(REFERENCE)}, '## DAG params': {problems}"


def test_every_documented_param_exists(dags):
    known = {p for dag in dags.values() for p in dag.params}
    unknown = sorted(set(documented_params()) - known)
    assert not unknown, f"{shown(REFERENCE)} documents params no DAG has: {unknown}"


# --- commands, links, size -----------------------------------------------------------------------------


def make_targets() -> set[str]:
    return set(re.findall(r"^([A-Za-z0-9_.-]+):", (REPO / "Makefile").read_text(), re.M))


def make_commands(text: str) -> list[str]:
    """The targets of ``make X`` in code: inline code spans and fenced blocks (prose may say "make it")."""
    code = re.findall(r"^```.*?^```", text, re.M | re.S)
    code += re.findall(r"`([^`\n]+)`", re.sub(r"^```.*?^```", "", text, flags=re.M | re.S))
    return [target for snippet in code for target in re.findall(r"\bmake ([a-z][a-z0-9_-]*)", snippet)]


def test_every_make_command_in_the_docs_is_a_target():
    targets = make_targets()
    missing = [
        f"{shown(path)}: make {target}"
        for path in markdown_files()
        for target in make_commands(path.read_text())
        if target not in targets
    ]
    assert not missing, f"commands that are not targets of the Makefile: {missing}"


def test_the_readme_names_the_two_commands():
    text = README.read_text()
    assert "make demo" in text and "make test" in text


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*]|\[([^\]]*)\]\([^)]*\)", lambda m: m.group(1) or "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.M | re.S)
    for heading in re.findall(r"^#{1,6} (.+?)\s*$", text, re.M):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def test_slug_matches_github():
    assert slug("The Reverse ETL page in the Airflow UI") == "the-reverse-etl-page-in-the-airflow-ui"
    assert slug("What happened to record X?") == "what-happened-to-record-x"
    assert slug("`make demo`") == "make-demo"
    assert slug("SALESmanago (through Data Talks)") == "salesmanago-through-data-talks"
    assert slug("`retl_state`") == "retl_state"


def test_every_relative_link_resolves():
    broken = []
    for path in markdown_files():
        text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.M | re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue
            file_part, _, anchor = target.partition("#")
            linked = (path.parent / file_part).resolve() if file_part else path
            if not linked.exists():
                broken.append(f"{shown(path)}: {target} (no such file)")
            elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
                broken.append(f"{shown(path)}: {target} (no such heading in {shown(linked)})")
    assert not broken, f"links that lead nowhere: {broken}"


def repository_text_files() -> list[Path]:
    """The repository's own text files: generated and installed folders are not walked."""
    import os

    skipped = {".git", ".venv", ".airflow", "data", "var", "node_modules", "__pycache__"}
    suffixes = {".md", ".py", ".yaml", ".yml", ".sql", ".json", ".toml", ".txt", ".html", ".in", ""}
    files = []
    for folder, dirs, names in os.walk(REPO):
        dirs[:] = [d for d in dirs if d not in skipped and (d == ".ci" or not d.startswith("."))]  # caches
        files += [Path(folder, n) for n in names if n not in skipped and Path(n).suffix in suffixes]
    return sorted(files)


def test_nothing_points_outside_the_repository():
    # the design notes and vendor notes this project grew from lived beside it; their content is in docs/
    outside = re.compile(r"\.\./shared|/work/|\bdesign\.md|\bvendor-apis\.md")
    found = []
    for path in repository_text_files():
        if path.resolve() == Path(__file__).resolve():
            continue
        try:
            lines = path.read_text().splitlines()
        except UnicodeDecodeError:
            continue
        found += [
            f"{shown(path)}:{n}: {line.strip()}" for n, line in enumerate(lines, 1) if outside.search(line)
        ]
    assert not found, f"references to files outside the repository (the project must stand alone): {found}"


def test_every_docs_page_the_code_names_exists():
    """Error messages, docstrings and comments send readers to docs pages: those pages must exist."""
    missing = [
        f"{shown(path)}: {page}"
        for path in repository_text_files()
        if path.suffix != ".md" and path.resolve() != Path(__file__).resolve()
        for page in re.findall(r"\bdocs/[\w/.-]+\.md\b", path.read_text(errors="replace"))
        if not (REPO / page).exists()
    ]
    assert not missing, f"references to docs pages that do not exist: {missing}"


def test_readme_is_a_first_five_minutes_page():
    size = len(README.read_bytes())
    assert size < README_MAX_BYTES, (
        f"README.md is {size:,} bytes: move detail to docs/ (limit {README_MAX_BYTES:,})"
    )
    text = README.read_text()
    assert "(docs/README.md)" in text, "README.md must link the docs index, docs/README.md"
    assert "<!-- demo-output:start -->" in text and "<!-- demo-output:end -->" in text


def test_every_docs_page_is_in_the_index():
    index = (DOCS / "README.md").read_text()
    missing = [
        shown(p)
        for p in sorted(DOCS.rglob("*.md"))
        if p.name != "README.md" and f"({p.relative_to(DOCS).as_posix()})" not in index
    ]
    assert not missing, f"docs pages not linked from docs/README.md: {missing}"
