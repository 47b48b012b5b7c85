"""The suite's parallel layout (Testing/conftest.py) names tests and fixtures that exist: a renamed test or
fixture would silently fall out of `FIRST` (started last, making the tail) or `SPLIT` (run apart from the tests
that share its fixture, which is then built twice)."""
from __future__ import annotations

import ast

import conftest

TESTING = conftest.ROOT / "Testing"


def _functions(module: str) -> set[str]:
    tree = ast.parse((TESTING / module).read_text(encoding="utf-8"))
    return {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}


def test_first_names_existing_groups():
    for name in conftest.FIRST:
        module, _, function = name.rpartition("::")
        if not module:
            assert name in conftest.SHARED_SESSION_FIXTURES and name in _functions("conftest.py"), name
        else:
            assert function in _functions(module), f"{name} in conftest.FIRST: no such test or fixture"


def test_split_names_existing_tests_and_fixtures():
    for path, tests in conftest.SPLIT.items():
        module = path.removeprefix("Testing/")
        defined = _functions(module)
        for test, fixture in tests.items():
            assert test.startswith("test_") and test in defined, f"{path}::{test} in conftest.SPLIT"
            assert fixture in defined or fixture in conftest.SHARED_SESSION_FIXTURES, f"{path}: {fixture}"


def test_split_lists_every_test_of_a_shared_fixture():
    """A test in a SPLIT module that takes one of its shared fixtures is listed with it (else it builds it again)."""
    for path, tests in conftest.SPLIT.items():
        shared = set(tests.values())
        tree = ast.parse((TESTING / path.removeprefix("Testing/")).read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                for fixture in shared & {a.arg for a in node.args.args}:
                    assert tests.get(node.name) == fixture, f"{path}::{node.name} takes {fixture}: list it in SPLIT"
