"""stackbench: the one name it installs (`import stackbench.bench`, `python -m stackbench.trainer`).

The rooms keep the places the repository gives them (bench/, core/, envcheck/, imagebuild/,
report/, trainer/ beside this folder). An installed wheel holds them inside this package
(pyproject.toml maps each folder under this name); in a checkout, or the image's copy of one, the
package finds them beside itself. Nothing imports them by their bare names, so a user's own
`trainer/` or `core/` on sys.path never shadows ours (tests/unit/test_layers.py keeps it so)."""

from pathlib import Path

__version__ = "0.1.0"

_checkout = Path(__file__).resolve().parent.parent
if not (Path(__file__).resolve().parent / "core").is_dir() and (_checkout / "core" / "__init__.py").is_file():
    __path__.append(str(_checkout))  # noqa: F821 -- a package's own __path__: its rooms live one folder up
