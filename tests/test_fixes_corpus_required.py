"""A missing corpus fails the tests that need it rather than skipping them."""

import conftest
import pytest


def test_missing_corpus_is_a_failure(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(conftest, "CORPUS", tmp_path / "no-corpus")
    outcome: BaseException | None = None
    try:
        conftest.corpus_lines()
    except BaseException as e:  # a skip must be caught here to be reported as wrong
        outcome = e
    assert isinstance(outcome, pytest.fail.Exception), f"got {outcome!r}"


def test_corpus_is_present() -> None:
    assert conftest.corpus_lines()
