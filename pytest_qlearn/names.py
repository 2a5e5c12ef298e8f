"""User-facing names shared by the pytest options and the code that applies them: the store's
environment variable, the order scopes and the budget's marker. Standard library only, so the
plugin's entry point can build its options without loading the engine (a run with the plugin
installed but not enabled imports five modules of ours and nothing else)."""

from __future__ import annotations

#: The store URL from the environment (CI secrets), between --qlearn-db and the ini key.
DATABASE_URL_ENV = "QLEARN_DATABASE_URL"

#: What a reordering keeps together (``qlearn_order_scope``).
ORDER_SCOPES = ("auto", "module", "class", "test")
DEFAULT_ORDER_SCOPE = "auto"

#: Tests with this marker always run under --qlearn-budget.
BUDGET_MARKER = "qlearn_always"
BUDGET_MARKER_HELP = f"{BUDGET_MARKER}: under --qlearn-budget, always run this test (pytest-qlearn)"

#: Truth words of the plugin's ini booleans (``qlearn = true``); anything else is an error.
TRUE_WORDS = ("true", "yes", "on", "1")
FALSE_WORDS = ("false", "no", "off", "0")
