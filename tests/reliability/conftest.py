from __future__ import annotations

from pathlib import Path

import pytest

from _reliability import write_image_folder


@pytest.fixture(scope="session")
def image_folder_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("image-folder"))
