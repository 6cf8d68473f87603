"""Plugins: loaded once, registered like the built-in entries, and refused with the file and line named."""

import textwrap

import pytest

import run_search
from trainables.plugins import PluginError, load_plugin

GOOD = """
from trainables.registry import Model, register_model

register_model(Model("tiny_plugin_net", build=lambda config, shape, classes: None))
"""

BAD = {
    "import_error": ("import numpy\nimport no_such_module_anywhere\n", 2, "ModuleNotFoundError"),
    "duplicate_name": (
        "from trainables.registry import Model, register_model\n\nregister_model(Model('basenet', build=print))\n",
        3,
        "'basenet' is already registered",
    ),
    "unknown_knob_type": (
        "from trainables.registry import Knob\nKNOB = Knob('width', 'complex', 1.0)\n",
        2,
        "unknown type 'complex'",
    ),
    "syntax_error": ("x = (\n", 1, "SyntaxError"),
}


def write(folder, name, text):
    path = folder / f"{name}.py"
    path.write_text(textwrap.dedent(text))
    return path


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_plugin_exits_2_naming_the_file_and_the_line(case, tmp_path, capsys, isolated_registry):
    text, line, words = BAD[case]
    path = write(tmp_path, f"bad_{case}", text)
    code = run_search.main(
        [
            "--plugin",
            str(path),
            "--space",
            "batchnorm",
            "--dataset",
            "digits",
            "--storage-path",
            str(tmp_path / "results"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert f"plugin {path} line {line}:" in err and words in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "results").exists()


def test_a_missing_plugin_file_or_module_exits_2(tmp_path, capsys, isolated_registry):
    assert run_search.main(["--plugin", str(tmp_path / "nope.py"), "--space", "batchnorm"]) == 2
    assert "nope.py: no such file" in capsys.readouterr().err
    assert run_search.main(["--plugin", "no_such_plugin_module", "--space", "batchnorm"]) == 2
    assert "no module named 'no_such_plugin_module'" in capsys.readouterr().err


def test_a_plugin_registers_like_a_built_in_and_loads_once(tmp_path, isolated_registry):
    path = write(tmp_path, "tiny_plugin", GOOD)
    module = load_plugin(str(path))
    assert load_plugin(str(path)) is module  # a trial reusing a worker loads it again: a no-op
    assert isolated_registry.model("tiny_plugin_net").origin == str(path)
    assert isolated_registry.model("basenet").origin == "built-in"


def test_a_plugin_may_not_shadow_an_installed_module(tmp_path, isolated_registry):
    with pytest.raises(PluginError, match="optuna.*rename the file"):
        load_plugin(str(write(tmp_path, "optuna", GOOD)))
