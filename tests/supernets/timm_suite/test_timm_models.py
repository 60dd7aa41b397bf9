"""timm's own model tests (its ``tests/test_models.py``, fetched for the installed timm by
``fetched.py``) run on the ``nas_*`` models; ``conftest.py`` chooses which models and mirrors
timm's exemptions.

The fetched file is executed as this module's body, so its test functions, parametrized over the
model lists the conftest provides, are collected here. When it cannot be fetched, or needs an API
the installed timm lacks, the module is skipped with one line saying why.
"""
import pytest

from tests.supernets.timm_suite import fetched

try:
    _path = fetched.test_models_file()
except RuntimeError as e:
    pytest.skip(f"timm's tests/test_models.py could not be fetched ({e}); fetch it with: "
                f"{fetched.fetch_command()}", allow_module_level=True)

# a conformance sweep of a third-party suite: the full run (CI's), not the edit-test loop
pytestmark = pytest.mark.slow

try:
    exec(compile(_path.read_text(), str(_path), "exec"), globals())
except (ImportError, AttributeError) as e:
    pytest.skip(f"{_path} needs what timm {fetched.timm.__version__} lacks ({type(e).__name__}: {e})",
                allow_module_level=True)
