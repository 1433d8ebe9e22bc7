"""Shared fixtures for the engine tests (run in the engine environment)."""
import pytest


@pytest.fixture(scope="session")
def mannequin():
    """The project's own SMPL-format body model, built once per test session."""
    from engine.body.mannequin import build_mannequin

    return build_mannequin()
