"""The library's floors: no import circle, no import running back up, nothing of Beam or the cloud.

Every import in ``pipeline/`` counts, at module level or inside a function, ``TYPE_CHECKING`` ones
too (a circle hidden in a function is still a circle). Modules sit on floors, the ground floor
first; a module may import its own floor and the floors below, never one above. A package's
``__init__`` belongs to the floor of its modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

PIPELINE = Path(__file__).resolve().parents[2] / "pipeline"

FLOORS: tuple[tuple[str, ...], ...] = (
    # 0: vocabularies, errors, geometry and the shapes of what we write: imported by everything
    (
        "pipeline",
        "pipeline.enums",
        "pipeline.errors",
        "pipeline.uids",
        "pipeline.provenance",
        "pipeline.bounded",
        "pipeline.warning_log",
        "pipeline.channel",
        "pipeline.warmup",
        "pipeline.locations",
        "pipeline.stage_clock",
        "pipeline.geometry",
        "pipeline.resample",
        "pipeline.qc.text",
        "pipeline.outputs.layout",
        "pipeline.outputs.schemas",
        "pipeline.measure.categories",
        "pipeline.measure.quality",
    ),
    # 1: algorithms on arrays, rows and files that know no DICOM object or model
    (
        "pipeline.measure",
        "pipeline.fetch",
        "pipeline.cohort",
        "pipeline.evaluate.lnq2023",
        "pipeline.evaluate.aggregate",
        "pipeline.evaluate.detection",
        "pipeline.outputs",
        "pipeline.outputs.analytics",
        "pipeline.dicom.tracking",
        "pipeline.dicom.codes",
        "pipeline.training.settings",
        "pipeline.training.dataset",
        "pipeline.training.labels",
        "pipeline.training.nifti",
        "pipeline.training.splits",
        "pipeline.training.provenance",
        "pipeline.demo.model",
        "pipeline.demo.phantoms",
    ),
    # 2: DICOM objects, models, pictures and the report
    ("pipeline.dicom", "pipeline.models", "pipeline.qc", "pipeline.report"),
    # 3: one series' records, its isolated children, the model's host, scoring files
    (
        "pipeline.outcome",
        "pipeline.outputs.rows",
        "pipeline.isolation",
        "pipeline.inputs",
        "pipeline.model_host",
        "pipeline.evaluate",
    ),
    # 4: a series (or a training case) from end to end, and what is made of it
    ("pipeline.series_stages", "pipeline.process", "pipeline.training", "pipeline.demo"),
)
FORBIDDEN = ("beam_jobs", "apache_beam", "google.cloud", "queries.bigquery")
"""The library is pure: no Beam, no cloud clients (STYLE.md)."""


def _modules(root: Path = PIPELINE) -> dict[str, Path]:
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _imports(path: Path, known: set[str]) -> set[str]:
    """Modules of ``known`` (and forbidden names) that ``path`` imports, anywhere in the file."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            if name in known or name.startswith(FORBIDDEN):
                out.add(name)
    return out


def floor_of(module: str) -> int:
    """The floor of the longest declared prefix of ``module``."""
    best: tuple[int, str] | None = None
    for number, floor in enumerate(FLOORS):
        for prefix in floor:
            matches = module == prefix or module.startswith(prefix + ".")
            if matches and (best is None or len(prefix) > len(best[1])):
                best = (number, prefix)
    assert best is not None, f"{module} is on no floor: add it to FLOORS"
    return best[0]


def import_graph(root: Path = PIPELINE) -> dict[str, set[str]]:
    modules = _modules(root)
    known = set(modules)
    return {m: _imports(p, known) - {m} for m, p in modules.items()}


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return [
        f"{m} (floor {floor_of(m)}) imports {i} (floor {floor_of(i)})"
        for m, imported in graph.items()
        for i in sorted(imported)
        if not i.startswith(FORBIDDEN) and floor_of(i) > floor_of(m)
    ]


def import_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return circles


def test_every_module_is_on_a_floor() -> None:
    for module in _modules():
        floor_of(module)


def test_the_library_imports_no_beam_and_no_cloud_client() -> None:
    offenders = {
        m: sorted(i for i in imported if i.startswith(FORBIDDEN)) for m, imported in import_graph().items()
    }
    assert {m: i for m, i in offenders.items() if i} == {}


def test_no_import_runs_back_up() -> None:
    assert upward_imports(import_graph()) == []


def test_no_import_circle() -> None:
    assert import_circles(import_graph()) == []


def test_the_checks_see_a_circle_and_an_upward_import(tmp_path: Path) -> None:
    """The checks themselves, on a made-up tree: a measurement that imports a DICOM writer runs back
    up, and two modules importing each other (one inside a function) are a circle."""
    fake = tmp_path / "pipeline"
    for package in (fake, fake / "measure", fake / "dicom"):
        package.mkdir(parents=True, exist_ok=True)
        (package / "__init__.py").write_text("")
    (fake / "measure" / "nodes.py").write_text(
        "from pipeline.dicom import seg_writer\nimport pipeline.errors\n"
    )
    (fake / "errors.py").write_text("def f():\n    from pipeline.measure import nodes\n")
    (fake / "dicom" / "seg_writer.py").write_text("import apache_beam\n")
    graph = import_graph(fake)
    upward = upward_imports(graph)
    assert "pipeline.measure.nodes (floor 1) imports pipeline.dicom.seg_writer (floor 2)" in upward
    assert "pipeline.errors (floor 0) imports pipeline.measure.nodes (floor 1)" in upward
    assert import_circles(graph) == [["pipeline.errors", "pipeline.measure.nodes"]]
    assert "apache_beam" in graph["pipeline.dicom.seg_writer"]
