"""Files Echo's programs read at run time, found as package data wherever Echo is installed.

The configs (the repository's `configs/*.yaml`) ship inside `server` as `server/configs`;
the browser page ships inside `client` as `client/web`. Nothing here looks outside the
installed packages, so `pip install .` works as well as a checkout.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from echo_core.errors import ConfigError

#: A config named without a suffix gets this one (`--config demo` is `demo.yaml`).
CONFIG_SUFFIX = ".yaml"


def _package_dir(package: str, name: str) -> Path:
    """The real directory `name` inside the installed `package` (packages are installed unzipped)."""
    return Path(str(files(package).joinpath(name)))


def configs_dir() -> Path:
    """The directory of the packaged configs."""
    return _package_dir("server", "configs")


def packaged_configs() -> list[str]:
    """Names of the packaged configs (`demo`, `cluster`, …), sorted."""
    return sorted(p.stem for p in configs_dir().glob(f"*{CONFIG_SUFFIX}"))


def config_file(name_or_path: str | Path) -> Path:
    """A config file: `name_or_path` when it is an existing file, else the packaged config it names
    (`demo` or `demo.yaml`). Only a bare name (no directory part) falls back to the packaged
    configs, so a mistyped path is reported rather than silently replaced.
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    if path.parent == Path("."):
        packaged = configs_dir() / (path.name if path.suffix == CONFIG_SUFFIX else path.name + CONFIG_SUFFIX)
        if packaged.is_file():
            return packaged
        raise ConfigError(
            f"config {str(name_or_path)!r} is neither a file nor a packaged config"
            f" ({', '.join(packaged_configs())})"
        )
    raise ConfigError(f"config file {str(path)!r} does not exist")


def web_dir() -> Path:
    """The browser page's directory (index.html and its scripts), shipped with `client`."""
    return _package_dir("client", "web")
