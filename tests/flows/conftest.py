import pytest


@pytest.fixture(scope="session")
def tool_model_dir(tmp_path_factory):
    """The tiny assistant that has memorised tool-calling conversations (tests/serve/tool_model.py): the same folder
    tests/serve trains it into, so a session trains it once."""
    from tests.serve.tool_model import make_tool_model

    return make_tool_model(tmp_path_factory.getbasetemp() / "tool-model")
