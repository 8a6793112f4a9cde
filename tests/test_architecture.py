"""No import cycles between the modules of medlens (the layer contracts are `lint-imports`, run by `make test`)."""

from __future__ import annotations

import grimp
import networkx as nx


def module_cycles(package: str = "medlens") -> list[list[str]]:
    """Every import cycle among the modules of ``package``, as the sorted members of each circle."""
    graph = grimp.build_graph(package, cache_dir=None)
    g = nx.DiGraph()
    for module in graph.modules:
        for imported in graph.find_modules_directly_imported_by(module):
            if module != imported and not module.startswith(imported + "."):  # a package's own __init__ is not a circle
                g.add_edge(module, imported)
    return sorted(sorted(c) for c in nx.strongly_connected_components(g) if len(c) > 1)


def test_no_import_cycles_between_modules():
    cycles = module_cycles()
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)

