"""Image tasks beside `build`: resolve a lock, fetch a wheelhouse, make a registry-free base."""

from __future__ import annotations

from stackbench.cli.program import run, task

_NO_REGISTRY = "the profile's registry-free variant ([no_registry])"


@task(help={"profile": "profile name", "cuda": "or the CUDA version's profile", "no_registry": _NO_REGISTRY})
def lock(c, profile="", cuda="", no_registry=False):
    """Resolve a profile into its hashed lock under docker/locks/ (needs PyPI)."""
    from stackbench.imagebuild.main import lock as run_lock

    run(run_lock, profile=profile, cuda=cuda, no_registry=no_registry)


@task(help={"profile": "profile name", "cuda": "or the CUDA version's profile", "out": "directory",
            "no_registry": _NO_REGISTRY})
def wheelhouse(c, profile="", cuda="", out="", no_registry=False):
    """Fetch every locked wheel and sdist (on a connected machine) for builds with no network."""
    from stackbench.imagebuild.main import wheelhouse as run_wheelhouse

    run(run_wheelhouse, profile=profile, cuda=cuda, out=out, no_registry=no_registry)


@task(help={"profile": "whose base to make (default cpu-small's)", "cuda": "or the CUDA version's profile",
            "no_registry": _NO_REGISTRY, "tag": "tag it differently from the profile's base"})
def base_image(c, profile="", cuda="", no_registry=False, tag=""):
    """Make a profile's Debian base here (debootstrap + docker import), for hosts without a registry."""
    from stackbench.imagebuild.main import base_image as run_base

    run(run_base, profile=profile, cuda=cuda, no_registry=no_registry, tag=tag)
