"""The repository stands alone: what a user reads (the README, docs/, the analysis README, the example
plugin and notebook, and the production code's comments) never sends them to a file outside it, and
the design document it points to is there. Benchmarks and opt-in tests may read the project machines'
CIFAR copy beside the checkout; they say what it is."""

from __future__ import annotations

import re
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
USER_FACING = ["README.md", "docs", "analysis/README.md", "examples", "notebooks", "Makefile", "pyproject.toml"]
PRODUCTION = ["run_search.py", "driver", "tuning", "search_spaces", "analysis", "trainables", "experiment"]
OUTSIDE = re.compile(r"\.\./shared|DESIGN\.md|DESIGN section")


def files(roots: list[str]) -> list[Path]:
    out = []
    for root in roots:
        path = PROJECT / root
        out += (
            [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
        )
    return out


def test_no_user_facing_file_or_production_comment_points_outside_the_repository():
    found = [
        f"{p.relative_to(PROJECT)}:{n}"
        for p in files(USER_FACING + PRODUCTION)
        if p.suffix in {".md", ".py", ".ipynb", ".toml", ""}
        for n, line in enumerate(p.read_text(errors="replace").splitlines(), 1)
        if OUTSIDE.search(line)
    ]
    assert not found, f"points outside the repository: {found}"


def test_the_readme_links_resolve_inside_the_repository():
    links = re.findall(r"\]\(([^)#]+)\)", (PROJECT / "README.md").read_text())
    assert "docs/design.md" in links
    missing = [link for link in links if not link.startswith("http") and not (PROJECT / link).exists()]
    assert not missing, missing
    for doc in (PROJECT / "docs").glob("*.md"):
        for link in re.findall(r"\]\(([^)#]+)\)", doc.read_text()):
            assert link.startswith("http") or (doc.parent / link).exists(), f"{doc.name}: {link}"


def test_the_viewers_the_driver_prints_are_in_the_base_install():
    # The driver prints `tensorboard --logdir EXP` and `optuna-dashboard JOURNAL`; `make demo` installs the
    # base dependencies alone, after which those commands must work as printed.
    import tomllib

    base = tomllib.loads((PROJECT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {re.split(r"[<>=\[ ;]", d, maxsplit=1)[0] for d in base}
    printed = "\n".join(p.read_text() for p in files(["driver", "tuning/study.py"]) if p.suffix == ".py")
    for command in ("tensorboard", "optuna-dashboard"):
        assert re.search(rf"\b{command} ", printed), f"the driver no longer prints {command}"
        assert command in names, f"{command} is printed by the driver but not in the base dependencies"
