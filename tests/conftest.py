import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest  # noqa: E402


@pytest.fixture(params=["op", "tf"])
def impl(request, monkeypatch):
    """Runs a test with the compiled op, then with the fallback forced by the env var."""
    from tf_sampling import ops
    from tf_sampling.ops import _loader

    if request.param == "tf":
        monkeypatch.setenv(_loader.ENV_FORCE_FALLBACK, "1")
    elif _loader.LIBRARY.get() is None:
        pytest.skip(f"custom ops unavailable: {_loader.LIBRARY.reason}")
    _loader.LIBRARY.reset()
    assert ops.custom_ops_available() == (request.param == "op")
    yield request.param
    _loader.LIBRARY.reset()
