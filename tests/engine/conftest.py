"""Shared fixtures for the engine tests (run in the engine environment)."""
import pytest


@pytest.fixture(scope="session")
def mannequin():
    """The project's own SMPL-format body model, built once per test session."""
    from engine.body.mannequin import build_mannequin

    return build_mannequin()


@pytest.fixture(scope="session")
def egl():
    """Skip the tests that render unless moderngl imports and an EGL context can be made.
    -> the EGL device description."""
    pytest.importorskip("moderngl")
    from engine.render.renderer import egl_available

    ok, why = egl_available()
    if not ok:
        pytest.skip(f"no EGL context: {why}")
    return why
