from __future__ import annotations

import importlib.util

if importlib.util.find_spec("hypothesis") is None:  # a dev dependency: without it the fuzz tests are not collected
    collect_ignore_glob = ["test_*.py"]
    COUNTS: dict[str, int] = {}
else:
    from _fuzz import COUNTS


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if COUNTS.get("cases"):
        terminalreporter.write_line(
            f"fuzz: {COUNTS['cases']} cases tried, {COUNTS['accepted']} calls accepted, "
            f"{COUNTS['rejected']} rejected with a ValueError/TypeError naming the argument"
        )
