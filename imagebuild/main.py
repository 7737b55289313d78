"""`invoke build`, `invoke lock`, `invoke wheelhouse`, `invoke base-image`: thin orchestration
of profile -> rules -> lock -> context -> engine -> manifest."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from envcheck import compat
from envcheck.drift import normalize
from imagebuild import lock as lock_mod
from imagebuild import profile as profile_mod
from imagebuild import render
from imagebuild.profile import ROOT, Profile
from core import record
from core.errors import UserError


def _say(line: str) -> None:
    print(line, flush=True)


def select(profile: str = "", cuda: str = "", overrides: dict[str, str] | None = None,
           no_registry: bool = False) -> Profile:
    name = profile or profile_mod.for_cuda(cuda or "12.4")
    return profile_mod.load(name, {k: v for k, v in (overrides or {}).items() if v}, no_registry=no_registry)


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
                what = (f"is at {head.stdout.strip()[:12]}, the lock wants {commit[:12]}" if head.stdout.strip() != commit
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
    import os
    import subprocess

    try:
        return subprocess.run(["git", *argv], capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "GIT_TERMINAL_PROMPT": "0"})
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(argv, 124, "", f"no answer in {timeout:.0f} s")


def compile_jobs() -> int:
    """The build's MAX_JOBS, as the Dockerfile computes it: ~4 GiB of memory per compiler job, at most one per core."""
    import os

    avail_gib = next((int(line.split()[1]) / 2**20 for line in Path("/proc/meminfo").read_text().splitlines()
                      if line.startswith("MemAvailable")), 4.0) if Path("/proc/meminfo").exists() else 4.0
    return max(1, min(os.cpu_count() or 1, int(avail_gib // 4)))


def compile_estimates(prof: Profile, wheelhouse: Path | None) -> list[str]:
    """Before a long source build starts: how long it will take here, from the profile's measured
    per-unit time ([build.estimates]); nothing for a piece whose wheel the wheelhouse carries."""
    lines = []
    for req in prof.sdists:
        dist, version = req.split("==")
        est = prof.estimates.get(normalize(dist))
        if not est:
            continue
        wheel_glob = f"{normalize(dist).replace('-', '_')}-{version}[-+]*.whl"
        if wheelhouse is not None and any(wheelhouse.glob(wheel_glob)):
            lines.append(f"{dist} {version}: a prebuilt wheel is in the wheelhouse ({wheelhouse}): installed, not compiled")
            continue
        jobs = compile_jobs()
        hours = est["units"] * est["unit_seconds"] / jobs / 3600
        lines.append(f"{dist} {version} will be compiled from source: {est['units']} compile units at about "
                     f"{est['unit_seconds'] / 60:.1f} min each ({est['measured']}), {jobs} parallel jobs here: about "
                     f"{hours:.1f} h. --no-flash-attn leaves it out (said in the image's labels and envcheck); a "
                     f"prebuilt wheel ({wheel_glob}) in --wheelhouse is installed instead")
    return lines


def choose_base(prof: Profile, reselect) -> tuple[Profile, dict]:
    """The base this build starts from, and how it was got (the manifest and the labels say it):
    the engine's own copy; one made here (debootstrap) for a profile that says how; a registry pull;
    or, where the pull fails and the profile has a [no_registry] variant, that variant (said on the
    console, never silently). `reselect(no_registry=True)` loads the variant with the same overrides."""
    from imagebuild import base_image, engine

    if base_image.exists(prof.base):
        return prof, {"source": "engine", "detail": f"{prof.base} is already in the engine"}
    if prof.bootstrap is not None:
        _say(f"making the base {prof.base}: {prof.bootstrap.describe()}")
        made = base_image.make(prof.base, prof.bootstrap)
        return prof, {"source": "debootstrap", "detail": made["made_by"], "seconds": made.get("seconds")}
    _say(f"pulling the base {prof.base}")
    try:
        engine.pull(prof.base)
        return prof, {"source": "registry", "detail": f"pulled {prof.base}"}
    except UserError as e:
        if not prof.has_no_registry:
            raise
        reason = e.what
    variant = reselect(no_registry=True)
    _say(f"the base {prof.base} cannot be pulled ({reason[:200]}).\n"
         f"  building the registry-free variant {variant.name} instead: {variant.description_of_base()}.\n"
         f"  to use your registry's copy, pass --base IMAGE (or docker load it first); --no-registry skips the pull")
    variant, how = choose_base(variant, reselect)
    return variant, {**how, "fallback_from": prof.base, "fallback_reason": reason}


def check_rules(prof: Profile, versions: dict[str, str | None], stage: str) -> list[dict]:
    """Refuse a known-bad combination before an hour of compiling finds it."""
    hits = compat.violations(versions)
    bad = [h for h in hits if h["status"] == "fail"]
    for h in hits:
        if h["status"] != "fail":
            _say(f"warning ({stage}): {h['message']}\n  fix: {h['fix']}\n  {h.get('link', '')}")
    if bad:
        raise UserError("; ".join(h["message"] for h in bad), where=f"profile {prof.name} ({stage})",
                        fix="; ".join(f"{h['fix']} ({h.get('link', '')})" for h in bad), kind="incompatible")
    return hits


def plan(prof: Profile) -> lock_mod.Lock:
    check_rules(prof, {**prof.pins(), "cuda": prof.cuda or None}, "profile pins")
    lock = lock_mod.load(prof)
    check_rules(prof, lock.versions_for_rules(prof), "resolved lock")
    return lock


def lock(profile: str = "", cuda: str = "", no_registry: bool = False) -> int:
    prof = select(profile, cuda, no_registry=no_registry)
    check_rules(prof, {**prof.pins(), "cuda": prof.cuda or None}, "profile pins")
    t0 = time.monotonic()
    resolved = lock_mod.resolve(prof)
    check_rules(prof, resolved.versions_for_rules(prof), "resolved lock")
    _say(f"{prof.name}: {len(resolved.pins())} pins -> {resolved.path} (lock {resolved.hash[:12]}, "
         f"{time.monotonic() - t0:.0f} s)")
    return 0


def wheelhouse(profile: str = "", cuda: str = "", out: str = "", no_registry: bool = False) -> int:
    prof = select(profile, cuda, no_registry=no_registry)
    target = Path(out or ROOT / ".cache" / "wheelhouse" / prof.name)
    lock_mod.wheelhouse(prof, lock_mod.load(prof), target)
    _say(f"{prof.name}: {len(list(target.iterdir()))} files in {target} (build with --wheelhouse {target})")
    return 0


def build(*, profile: str = "", cuda: str = "", torch: str = "", deepspeed: str = "", flash_attn: str = "",
          base: str = "", wheelhouse_dir: str = "", extra_ca: str = "", export: str = "", render_only: bool = False,
          nocache: bool = False, results: str = "results", no_registry: bool = False, no_flash_attn: bool = False,
          git_source: tuple[str, ...] = ()) -> int:
    from imagebuild import engine

    versions = {k: v for k, v in {"torch": torch, "deepspeed": deepspeed, "flash-attn": flash_attn}.items() if v}
    if no_flash_attn and flash_attn:
        raise UserError("--no-flash-attn and --flash-attn contradict each other", where="invoke build",
                        fix="pass one of them")
    given = {}
    for item in git_source:
        name, sep, folder = item.partition("=")
        if not sep or not name or not folder:
            raise UserError(f"--git-source {item!r} is not NAME=DIR", where="--git-source", fix="e.g. apex=/src/apex")
        given[name.strip()] = folder.strip()

    def reselect(no_registry: bool) -> Profile:
        return select(profile, cuda, {**versions, "base": base}, no_registry=no_registry)

    def prepare(prof: Profile) -> tuple[Profile, lock_mod.Lock]:
        """Left-out pieces, a derived stack's own name and lock, the rules: all before any engine work."""
        if no_flash_attn:
            prof.leave_out("flash-attn", "--no-flash-attn: its prebuilt wheels are on GitHub, a source build takes "
                           "hours; attention runs on sdpa")
        if versions:  # a derived stack: its own name and lock, checked against the rules before resolving
            prof.name += "+" + "+".join(f"{k}{v}" for k, v in versions.items())
            check_rules(prof, {**prof.pins(), "cuda": prof.cuda or None}, "profile pins")
            if not (prof.lock_dir / "wheels.txt").exists():
                _say(f"resolving a lock for {prof.name} (overrides {versions})")
                lock_mod.resolve(prof)
        return prof, plan(prof)

    prof, lock = prepare(reselect(no_registry))
    sources = git_sources(prof, given) if not render_only else {}  # refused here, before any engine work
    how = {"source": "--base", "detail": f"{base} (given on the command line)"} if base else None
    if how is None and not render_only:
        chosen, how = choose_base(prof, reselect)
        if chosen is not prof:  # the registry-free variant: its own lock
            prof, lock = prepare(chosen)
    for name, where in sources.items():
        if where["source"] != prof.git[name]["url"]:
            prof.git[name]["source"] = where["source"]
    tag = render.tag(prof, lock)
    ctx = render.context(prof, lock, ROOT / ".cache" / "build" / prof.name,
                         wheelhouse=Path(wheelhouse_dir) if wheelhouse_dir else None,
                         extra_ca=Path(extra_ca) if extra_ca else None)
    if render_only:
        _say(f"{tag}: context in {ctx} (Dockerfile: {ctx / 'Dockerfile'})")
        return 0
    _say(f"building {tag} from {prof.base} ({how['source']}: {how['detail']}; lock {lock.hash[:12]}, "
         f"{'wheelhouse' if wheelhouse_dir else 'PyPI'})")
    for dist, why in prof.left_out.items():
        _say(f"left out of this image: {dist} ({why}); the labels and envcheck in the image report it")
    for line in compile_estimates(prof, Path(wheelhouse_dir) if wheelhouse_dir else None):
        _say(line)
    result = engine.build(ctx, tag, _say, nocache=nocache)
    info = engine.image_info(tag)
    manifest = {
        "schema": "stackbench.image/1", "profile": prof.name, "tag": tag, "image_id": result.image_id,
        "lock_hash": lock.hash, "base": prof.base, "base_source": how, "cuda": prof.cuda or None,
        "python": prof.python, "left_out": prof.left_out, "git_sources": sources, "size_bytes": info["size_bytes"],
        "build_seconds": result.seconds, "stage_seconds": result.stage_seconds, "steps": result.steps,
        "cached_steps": result.cached_steps, "fully_cached": result.fully_cached,
        "wheelhouse": bool(wheelhouse_dir), "labels": info["labels"], "built_at": record.now(),
    }
    if export:
        out = engine.export(tag, Path(export))
        manifest["export"] = {"path": str(out), "bytes": out.stat().st_size, "load": f"docker load -i {out}",
                              **_other_runtimes(out)}
    path = record.write(Path(results) / "images" / f"{tag.split('/', 1)[1].replace(':', '-')}.json", manifest)
    _say(f"{tag}: {result.image_id[:19]}, {info['size_bytes'] / 2**30:.2f} GiB, {result.seconds:.1f} s"
         f"{' (every step from cache)' if result.fully_cached else ''}; manifest {path}")
    return 0


def _other_runtimes(tar: Path) -> dict:
    """How to run the export where Docker is not the runtime (Slurm clusters: pyxis/enroot, Apptainer)."""
    notes = {"enroot": f"enroot import docker-archive://{tar}  # then srun --container-image=<the .sqsh>",
             "apptainer": f"apptainer build {tar.with_suffix('.sif')} docker-archive://{tar}"}
    notes["found_here"] = [t for t in ("enroot", "apptainer", "singularity") if shutil.which(t)]
    return notes


def base_image(profile: str = "", cuda: str = "", no_registry: bool = False, tag: str = "") -> int:
    """Make the base a profile names (default: cpu-small's) the way its [bootstrap] says."""
    from imagebuild import base_image as base_mod

    prof = select(profile or ("" if cuda else "cpu-small"), cuda, no_registry=no_registry)
    if prof.bootstrap is None:
        raise UserError(f"profile {prof.name}'s base {prof.base} comes from a registry: nothing to make here",
                        where="invoke base-image", fix="pass --no-registry for its registry-free variant"
                        if prof.has_no_registry else "pull it, or pass a profile with [bootstrap]")
    info = base_mod.make(tag or prof.base, prof.bootstrap)
    _say(json.dumps(info))
    return 0

