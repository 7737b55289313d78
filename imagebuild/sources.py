"""What the compile stage builds and from where: a [git] piece from a checkout fetched beforehand
or its URL (refused before any engine work when neither is there), and how long a long source
build will take here, from the profile's measured per-unit time."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from stackbench.core.errors import UserError
from stackbench.core.lockfile import normalize
from stackbench.imagebuild.profile import Profile


def git_sources(prof: Profile, given: dict[str, str]) -> dict[str, dict]:
    """Where each [git] piece comes from: a directory fetched beforehand (--git-source NAME=DIR, a
    checkout at exactly the locked commit, no local edits), or its URL when this machine reaches it.
    Anything else is refused here, before the engine starts (exit 2)."""
    out = {}
    unknown = sorted(set(given) - set(prof.git))
    if unknown:
        raise UserError(f"--git-source names {', '.join(unknown)}, which profile {prof.name} does not build from git",
                        where="--git-source", fix=f"it builds {', '.join(prof.git) or 'nothing'} from git")
    for name, spec in prof.git.items():
        commit = spec["commit"]
        if name in given:
            src = Path(given[name]).expanduser().resolve()
            head = _git(["-C", str(src), "rev-parse", "HEAD"])
            if head.returncode != 0:
                raise UserError(f"{src} is not a git checkout of {name}", where=f"--git-source {name}={given[name]}",
                                fix=f"git clone {spec['url']} {src} && git -C {src} checkout {commit}")
            dirty = _git(["-C", str(src), "status", "--porcelain", "--untracked-files=no"]).stdout.strip()
            if head.stdout.strip() != commit or dirty:
                what = (f"is at {head.stdout.strip()[:12]}, the lock wants {commit[:12]}"
                        if head.stdout.strip() != commit
                        else f"has local edits ({len(dirty.splitlines())} files)")
                raise UserError(f"{name} in {src} {what}", where=f"--git-source {name}={given[name]}",
                                fix=f"git -C {src} checkout --force {commit}")
            out[name] = {"source": str(src), "commit": commit}
            continue
        probe = _git(["ls-remote", "--exit-code", spec["url"], "HEAD"], timeout=30)
        if probe.returncode != 0:
            why = (probe.stderr.strip().splitlines() or ["no answer in 30 s"])[-1][:200]
            raise UserError(f"{name} is built from {spec['url']} at {commit[:12]}, which this machine cannot reach "
                            f"({why})", where=f"profile {prof.name} [git] {name}",
                            fix=f"fetch it where the URL answers (git clone {spec['url']} {name} && git -C {name} "
                                f"checkout {commit}), bring the folder here and pass --git-source {name}=DIR",
                            kind="unreachable")
        out[name] = {"source": spec["url"], "commit": commit}
    return out


def _git(argv: list[str], timeout: float = 60):
    try:
        return subprocess.run(["git", *argv], capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "GIT_TERMINAL_PROMPT": "0"})
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(argv, 124, "", f"no answer in {timeout:.0f} s")


def compile_jobs() -> int:
    """The build's MAX_JOBS, as the Dockerfile computes it: ~4 GiB of memory per compiler job, at most one per core."""
    avail_gib = next((int(line.split()[1]) / 2**20 for line in Path("/proc/meminfo").read_text().splitlines()
                      if line.startswith("MemAvailable")), 4.0) if Path("/proc/meminfo").exists() else 4.0
    return max(1, min(os.cpu_count() or 1, int(avail_gib // 4)))


def prebuilt_wheel_glob(dist: str, version: str) -> str:
    """The wheel of an sdist the profile compiles, as the build looks for it in the wheelhouse."""
    return f"{normalize(dist).replace('-', '_')}-{version}[-+]*.whl"


def compile_estimates(prof: Profile, wheelhouse: Path | None) -> list[str]:
    """Before a long source build starts: how long it will take here, from the profile's measured
    per-unit time ([build.estimates]); nothing for a piece whose wheel the wheelhouse carries."""
    lines = []
    for req in prof.sdists:
        dist, version = req.split("==")
        est = prof.estimates.get(normalize(dist))
        if not est:
            continue
        wheel_glob = prebuilt_wheel_glob(dist, version)
        if wheelhouse is not None and any(wheelhouse.glob(wheel_glob)):
            lines.append(f"{dist} {version}: a prebuilt wheel is in the wheelhouse ({wheelhouse}): "
                         "installed, not compiled")
            continue
        jobs = compile_jobs()
        hours = est["units"] * est["unit_seconds"] / jobs / 3600
        lines.append(f"{dist} {version} will be compiled from source: {est['units']} compile units at about "
                     f"{est['unit_seconds'] / 60:.1f} min each ({est['measured']}), {jobs} parallel jobs here: about "
                     f"{hours:.1f} h. --no-flash-attn leaves it out (said in the image's labels and envcheck); a "
                     f"prebuilt wheel ({wheel_glob}) in --wheelhouse is installed instead")
    return lines
