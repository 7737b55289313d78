"""`invoke build`, `invoke lock`, `invoke wheelhouse`, `invoke base-image`: thin orchestration
of profile -> rules -> lock -> context -> engine -> manifest."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from stackbench.core import compat_rules as compat
from stackbench.core import record
from stackbench.core.errors import UserError
from stackbench.imagebuild import lock as lock_mod
from stackbench.imagebuild import profile as profile_mod
from stackbench.imagebuild import render
from stackbench.imagebuild import sources as sources_mod
from stackbench.imagebuild.profile import ROOT, Profile


def _say(line: str) -> None:
    print(line, flush=True)


def select(profile: str = "", cuda: str = "", overrides: dict[str, str] | None = None,
           no_registry: bool = False) -> Profile:
    name = profile or profile_mod.for_cuda(cuda or "12.4")
    return profile_mod.load(name, {k: v for k, v in (overrides or {}).items() if v}, no_registry=no_registry)


def choose_base(prof: Profile, reselect) -> tuple[Profile, dict]:
    """The base this build starts from, and how it was got (the manifest and the labels say it):
    the engine's own copy; one made here (debootstrap) for a profile that says how; a registry pull;
    or, where the pull fails and the profile has a [no_registry] variant, that variant (said on the
    console, never silently). `reselect(no_registry=True)` loads the variant with the same overrides."""
    from stackbench.imagebuild import base_image, engine

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


def variant_changes(registry: Profile, variant: Profile) -> list[str]:
    """What a [no_registry] variant changes beyond its base: Python, pins, pieces built from source."""
    out = [f"Python {registry.python} -> {variant.python}"] if registry.python != variant.python else []
    before, after = registry.pins(), variant.pins()
    out += [f"{name} {before[name]} -> {after[name]}" for name in sorted(after)
            if before.get(name, after[name]) != after[name]]
    out += [f"{req} built from its sdist (no wheel for Python {variant.python})"
            for req in variant.sdists if req not in registry.sdists and req in registry.stack]
    return out


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
    from stackbench.imagebuild import engine

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
    sources = sources_mod.git_sources(prof, given) if not render_only else {}  # refused here, before any engine work
    how = {"source": "--base", "detail": f"{base} (given on the command line)"} if base else None
    if how is None and not render_only:
        chosen, how = choose_base(prof, reselect)
        if chosen is not prof:  # the registry-free variant: its own lock
            prof, lock = prepare(chosen)
    changes = variant_changes(reselect(False), prof) if no_registry or "fallback_from" in (how or {}) else []
    for line in changes:
        _say(f"the registry-free variant differs: {line}")
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
    for line in sources_mod.compile_estimates(prof, Path(wheelhouse_dir) if wheelhouse_dir else None):
        _say(line)
    result = engine.build(ctx, tag, _say, nocache=nocache)
    info = engine.image_info(tag)
    manifest = {
        "schema": "stackbench.image/1", "profile": prof.name, "tag": tag, "image_id": result.image_id,
        "lock_hash": lock.hash, "base": prof.base, "base_source": how, "cuda": prof.cuda or None,
        "python": prof.python, "variant_changes": changes, "left_out": prof.left_out, "git_sources": sources,
        "size_bytes": info["size_bytes"],
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
    from stackbench.imagebuild import base_image as base_mod

    prof = select(profile or ("" if cuda else "cpu-small"), cuda, no_registry=no_registry)
    if prof.bootstrap is None:
        raise UserError(f"profile {prof.name}'s base {prof.base} comes from a registry: nothing to make here",
                        where="invoke base-image", fix="pass --no-registry for its registry-free variant"
                        if prof.has_no_registry else "pull it, or pass a profile with [bootstrap]")
    info = base_mod.make(tag or prof.base, prof.bootstrap)
    _say(json.dumps(info))
    return 0

