"""Shared pytest fixtures: where the real speech lives, and skipping without it."""

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent


def shared_data_dir() -> Path:
    """``$TSE_SHARED_DATA`` or ``../shared/data`` beside the checkout."""
    return Path(os.environ.get("TSE_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if not path.is_dir():
        pytest.skip(f"real speech not found at {path}: set TSE_SHARED_DATA to run this test")
    return path


@pytest.fixture(scope="session")
def ci_tiny(shared_data) -> Path:
    """8 LibriSpeech speakers x 3 pieces (``speech/<spk>/*.flac``) + 2 noise clips."""
    path = shared_data / "ci_tiny"
    if not path.is_dir():
        pytest.skip(f"{path} not found: set TSE_SHARED_DATA to a folder holding ci_tiny/")
    return path


@pytest.fixture(scope="session")
def tiny_args() -> dict:
    """Constructor arguments of ``tiny.yaml``'s SpEx+ (sizes written once, in that file)."""
    from modules.model_dir import model_args_from_hparams

    return model_args_from_hparams(REPO_ROOT / "recipes" / "LibriMix-TSE" / "hparams" / "tiny.yaml")
