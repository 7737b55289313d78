"""Launchers behind one contract (base.Launcher). A plain dict registry, no string imports."""

from bench.launchers.base import LaunchOptions, Launcher
from bench.launchers.local import LocalLauncher

LAUNCHERS: dict[str, type[Launcher]] = {"local": LocalLauncher}

__all__ = ["LAUNCHERS", "LaunchOptions", "Launcher"]
