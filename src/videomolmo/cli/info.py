"""`videomolmo version`: the installed version and the libraries it runs on."""

from __future__ import annotations

from videomolmo.cli.app import command, console


@command("version")
def version() -> None:
    """Print the videomolmo version and the torch / transformers versions it runs on."""
    import importlib.metadata as md

    import videomolmo

    parts = [f"videomolmo {videomolmo.__version__}"]
    for lib in ("torch", "transformers", "av", "opencv-python-headless"):
        try:
            parts.append(f"{lib} {md.version(lib)}")
        except md.PackageNotFoundError:
            parts.append(f"{lib} (not installed)")
    console.print(", ".join(parts))
