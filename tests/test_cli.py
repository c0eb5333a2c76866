from typer.testing import CliRunner

from videomolmo.cli import app


def test_version_names_the_libraries():
    result = CliRunner().invoke(app, ["version"])
    assert result.exit_code == 0
    assert "videomolmo" in result.output and "torch" in result.output
