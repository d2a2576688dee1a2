"""Below its router the dossier knows no web framework, whatever modules it grows (the
import-linter contract names its modules one by one); and the domains it reads from never
import it."""

from __future__ import annotations

import grimp
import pytest

WEB = ("fastapi", "starlette", "gateway.deps", "gateway.state", "gateway.main")
READ_FROM = (
    "gateway.registry",
    "gateway.jobs",
    "gateway.files",
    "gateway.data_sources",
    "gateway.base_models",
    "gateway.audit_api",
    "gateway.authz",
    "gateway.runtime",
)


@pytest.fixture(scope="module")
def graph():
    return grimp.build_graph(
        "gateway", "audit", "policies", "trainer", "ingest", include_external_packages=True
    )


def test_below_the_router_nothing_reaches_the_web_framework(graph):
    modules = graph.find_descendants("gateway.dossier") - {"gateway.dossier.router"}
    assert "gateway.dossier.service" in modules
    chains = {
        (module, web): graph.find_shortest_chain(importer=module, imported=web, as_packages=True)
        for module in sorted(modules)
        for web in WEB
    }
    assert {pair: chain for pair, chain in chains.items() if chain} == {}


def test_the_domains_it_reads_never_import_it(graph):
    chains = {
        domain: graph.find_shortest_chain(
            importer=domain, imported="gateway.dossier", as_packages=True
        )
        for domain in READ_FROM
    }
    assert {domain: chain for domain, chain in chains.items() if chain} == {}
