"""The README's Python snippets run as written."""
import re

from conftest import REPO


def test_readme_python_blocks_run(tmp_path, monkeypatch, capsys):
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "README.md has no python snippet"
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {"__name__": "__readme__"})
    out = capsys.readouterr().out
    assert "pair" in out  # the RDM came back labelled
    assert (tmp_path / "my_run" / "activations" / "checkpoint_00000000.nc").is_file()
