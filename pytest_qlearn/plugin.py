"""The pytest entry point of pytest-qlearn (``pytest11``): options, markers and the few
module-level hooks. Kept light on purpose: a run with the plugin installed but not enabled
imports nothing more; an enabled run registers the live plugin of :mod:`.lifecycle`.

The ranking hooks live on this module, not on the plugin object: the module is registered
before any plugin object, so among the ``trylast`` implementations of
pytest_collection_modifyitems this one runs before pytest-order's (whose plugin object is
registered in its pytest_configure) — and being trylast, after -k/-m, --deselect, --sw and
other plugins have deselected, so only what will run is ranked. --lf/--ff/--nf are wrappers
and reorder after it: they, and pytest-order, keep the last word.
"""

from __future__ import annotations

from typing import Any

import pytest

from . import hookspecs
from .names import BUDGET_MARKER_HELP
from .options import add_options, may_be_enabled, read_settings

# The live plugin object (lifecycle.QLearnPlugin) of an enabled run; typed loosely so this
# module need not import it.
plugin_key = pytest.StashKey[Any]()
#: Set by the live plugin when it froze the garbage collector's view (``gc.freeze()``) and
#: leaves the unfreeze to the cleanup :func:`pytest_cmdline_main` registered.
frozen_key = pytest.StashKey[list[bool]]()


def pytest_cmdline_main(config: pytest.Config) -> None:
    """Register — before any plugin's pytest_configure, so that it runs after their
    cleanups — the cleanup that undoes an enabled run's ``gc.freeze()``. pytest's own last
    cleanup runs full garbage collections (to report unraisable exceptions); unfrozen
    before them, the objects the run froze made each of them markedly slower than without
    freezing at all (measured: ~80 ms vs ~45 ms each on 5,000 tests). A no-op unless the
    live plugin froze; a run that never gets here (a pytest-xdist worker) unfreezes when
    the plugin closes."""
    frozen: list[bool] = []
    config.stash[frozen_key] = frozen

    def unfreeze() -> None:
        if frozen:
            frozen.clear()
            # imported here: a run that never enabled the plugin never loads the engine
            from .engine.qlearner import unfreeze_run

            unfreeze_run()

    config.add_cleanup(unfreeze)


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


@pytest.hookimpl(trylast=True)  # after cacheprovider has set up config.cache
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", BUDGET_MARKER_HELP)
    if not may_be_enabled(config):
        return
    settings = read_settings(config)
    if not settings.enabled:
        return
    from . import lifecycle  # only an enabled run pays for the engine, stores and reports

    lifecycle.configure(config, settings)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    plugin = config.stash.get(plugin_key, None)
    if plugin is not None:
        plugin.rank_items(config, items)


def pytest_deselected(items: list[pytest.Item]) -> None:
    if items:
        plugin = items[0].config.stash.get(plugin_key, None)
        if plugin is not None:
            plugin.deselected(items)


def pytest_unconfigure(config: pytest.Config) -> None:
    if plugin_key in config.stash:
        from . import lifecycle

        lifecycle.unconfigure(config)
