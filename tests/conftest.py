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


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "background(name): the test reads the child-process job `name` "
        "(tests/_background.py), which runs beside the other tests")


def pytest_collection_modifyitems(session, config, items):
    """Moves the tests that read background jobs to the end and starts their jobs."""
    import _background

    names, late, early = [], [], []
    for item in items:
        marks = list(item.iter_markers("background"))
        for mark in marks:
            for name in mark.args:
                if name not in names:
                    names.append(name)
        (late if marks else early).append(item)
    items[:] = early + late
    if not config.option.collectonly:
        _background.start(names)


def pytest_runtest_setup(item):
    if item.get_closest_marker("background") is not None:
        import _background

        _background.reader_starts()


def pytest_terminal_summary(terminalreporter):
    """The background jobs' run times, and the time tests spent waiting for them (the part
    of the suite's wall time that the jobs did not hide)."""
    import _background

    lines = _background.report()
    if lines:
        terminalreporter.section("background jobs")
        for line in lines:
            terminalreporter.write_line(line)
