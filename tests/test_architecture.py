"""The layout's promises (docs/internals.md): no import cycle in src/, no module over 450 lines,
typer and rich only under cli/. Checked statically, from the source, so a lazy import counts too."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGE = SRC / "capi_cli"
MAX_LINES = 450


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The capi_cli modules a module imports anywhere in its body (typing-only imports aside)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.add(full if full in modules else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return {m for m in found if m in modules and m != name}


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(files)
    graph = {name: _imports(path, modules) for name, path in files.items()}
    # Importing a.b.c runs a/__init__ and a/b/__init__ first: only edges to the module itself count,
    # so a package's __init__ re-exporting its submodules is no cycle with them.
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = [0]

    def strongconnect(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph[node]):
            if succ not in index:
                strongconnect(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            strongconnect(node)
    return components


def test_no_import_cycle_in_src() -> None:
    assert _cycles(_graph()) == []


def test_the_cycle_check_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_over_450_lines() -> None:
    long = {
        str(p.relative_to(SRC)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert long == {}


def test_typer_and_rich_only_in_cli() -> None:
    leaks = []
    for path in PACKAGE.rglob("*.py"):
        if "cli" in path.relative_to(PACKAGE).parts[:1]:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            leaks += [f"{path.relative_to(SRC)}: {n}" for n in names if n.split(".")[0] in {"typer", "rich", "click"}]
    assert leaks == []


def test_each_ledger_holds_its_referral_store_rather_than_being_one() -> None:
    """The referral half is composed into both backends (`ledger.referrals`), not inherited: the
    ledger classes have no referral method of their own, and each store works on its ledger's
    connection and names its ledger (a worker opens the same ledger, then its store)."""
    import tempfile
    from pathlib import Path

    from capi_cli.ledger.pg_referrals import PostgresReferrals
    from capi_cli.ledger.postgres import PostgresLedger
    from capi_cli.ledger.referrals import ReferralStore
    from capi_cli.ledger.store import Ledger

    for backend in (Ledger, PostgresLedger):
        assert not issubclass(backend, ReferralStore)
        assert not any(hasattr(backend, name) for name in ("store_referrals", "list_referrals",
                                                            "latest_whatsapp_referrals", "accounts_for_users"))
    assert issubclass(PostgresReferrals, ReferralStore)
    with tempfile.TemporaryDirectory() as tmp, Ledger.open(Path(tmp) / "ledger.sqlite3") as ledger:
        assert type(ledger.referrals) is ReferralStore
        assert ledger.referrals.ref == ledger.ref and ledger.referrals._conn is ledger._conn
        assert ledger.referrals.store_referrals([{"channel": "whatsapp", "ctwa_clid": "C1", "message_id": "wamid.1",
                                                  "wa_id": "905321234567", "timestamp": 1_700_000_000}]) == (1, 0)
        assert ledger._conn.execute("SELECT count(*) FROM referrals").fetchone()[0] == 1
