"""Which environment variables carry secrets, defined once, and how they are kept from paper.

A secret is passed to the ranks by a mechanism that writes nothing down: the process environment
(local), ssh's standard input (torchrun: bench/launchers/remote.py exports it on the far side),
Slurm's own propagation of the submitting shell's environment (sbatch --export=ALL). It never
goes into a job script, an argv, a record, a report or an image. Records name the secrets a run
was given; each rank records a keyed hash of each value (HMAC with a key that exists only in the
run's environment), so the ranks of a run can be compared with each other, and with a known value
by whoever sets STACKBENCH_SECRET_HASH_KEY, but no record lets anyone test guesses offline.

Two tiers: every name below is a *secret* (passed only that way, never written); the values of
*credentials* (tokens, keys, passwords) are also searched for and redacted in what stackbench
writes, the last guard. Cloud SDK settings such as AWS_PROFILE or AWS_REGION are secrets by
name (their neighbours are keys) but not credentials: redacting "default" everywhere would
corrupt the text.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
from typing import Any, Mapping

from stackbench.core.errors import ConfigError

# Names that hold credentials: the tokens our users' stacks read by name (Hugging Face, wandb,
# ModelScope, trackers), then the suffixes and words every other credential is spelled with.
CREDENTIAL_NAME = re.compile(
    r"^(HF_TOKEN|HUGGING_FACE_HUB_TOKEN|HUGGINGFACE_TOKEN|WANDB_API_KEY|MODELSCOPE_API_TOKEN|COMET_API_KEY|"
    r"NEPTUNE_API_TOKEN|GOOGLE_APPLICATION_CREDENTIALS|DOCKER_AUTH_CONFIG|SENTRY_DSN)$"
    r"|(_TOKEN|_KEY|_SECRET|_APIKEY|_PAT|_PASS|_JWT|_DSN|_AUTH)$"
    r"|SECRET|PASSWORD|PASSWD|CREDENTIAL|PRIVATE_KEY|ACCESS_KEY|CONNECTION_STRING|_AUTH_",
    re.I)
# Whole families that travel with credentials: passed as secrets, not searched for in text.
SECRET_FAMILY = re.compile(r"^(AWS|AZURE|ALIBABA_CLOUD|ALICLOUD|OSS|TENCENTCLOUD|GCP|GCLOUD|CLOUDSDK)_", re.I)
# Names those patterns catch that are plainly settings (the value is a switch or a public id).
NOT_SECRET = frozenset({"HF_HUB_DISABLE_IMPLICIT_TOKEN", "GPG_KEY", "PYTHON_GPG_KEY", "SSH_AUTH_SOCK"})

# A value that carries a password whatever its name: a URL with [user]:password@ or token@.
SECRET_VALUE = re.compile(r"://[^/\s@]*:[^/\s@]+@|://[^/\s:@]{20,}@")

# The key of the ranks' hashes; a secret itself (its name ends in _KEY), never hashed.
HASH_KEY = "STACKBENCH_SECRET_HASH_KEY"

# Values shorter than this are not searched for in text (a "1" would redact every digit).
MIN_REDACT_LEN = 6


def is_credential(name: str, value: str = "") -> bool:
    if name.upper() in NOT_SECRET:
        return bool(value and SECRET_VALUE.search(value))
    return bool(CREDENTIAL_NAME.search(name) or (value and SECRET_VALUE.search(value)))


def is_secret(name: str, value: str = "") -> bool:
    return is_credential(name, value) or bool(SECRET_FAMILY.search(name))


def split(env: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """(plain, secret): what may be written into a script or a command, and what may not."""
    plain, secret = {}, {}
    for k, v in env.items():
        (secret if is_secret(k, v) else plain)[k] = v
    return plain, secret


def present(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The secrets of an environment (this process's by default)."""
    return split(os.environ if env is None else env)[1]


def fingerprint(value: str, key: str) -> str:
    """A short keyed hash: equal values give equal hashes under one key; without the key a hash
    says nothing about the value."""
    return "hmac-sha256:" + hmac.new(key.encode(), value.encode(), hashlib.sha256).hexdigest()[:16]


def fingerprints(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """{name: keyed hash} of the secrets a rank sees (what it records), with the run's key."""
    env = os.environ if env is None else env
    key = env.get(HASH_KEY, "")
    if not key:  # a trainer started by hand: names only
        return {k: "" for k in sorted(present(env))}
    return {k: fingerprint(v, key) for k, v in sorted(present(env).items()) if k != HASH_KEY}


def _credential_values(env: Mapping[str, str] | None) -> list[tuple[str, str]]:
    env = os.environ if env is None else env
    found = [(k, v) for k, v in env.items() if len(v) >= MIN_REDACT_LEN and is_credential(k, v)]
    return sorted(found, key=lambda kv: -len(kv[1]))


def leaks(text: str, env: Mapping[str, str] | None = None) -> list[str]:
    """The names of credentials whose value is in text (for what must not be rewritten: a script)."""
    return [name for name, value in _credential_values(env) if value in text]


def refuse_leaks(text: str, what: str) -> None:
    """A script about to be written or submitted that holds a credential's value (a setting such as
    NCCL_DEBUG_FILE=/tmp/$HF_TOKEN.log, expanded): refused, never rewritten."""
    leaked = leaks(text)
    if leaked:
        raise ConfigError(f"{what} would hold the value of {', '.join(leaked)}", where="--env / the environment",
                          fix="pass secrets only as themselves (export HF_TOKEN=...), not inside other settings")


def _forms(env: Mapping[str, str] | None) -> list[tuple[str, str]]:
    """(name, text) for every form a credential's value takes once serialised (as is, and JSON-escaped)."""
    return [(name, form) for name, value in _credential_values(env)
            for form in {value, json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]}]


def _redact(text: str, forms: list[tuple[str, str]]) -> str:
    for name, form in forms:
        if form in text:
            text = text.replace(form, f"<{name}: redacted>")
    return text


def redact(text: str, env: Mapping[str, str] | None = None) -> str:
    """Text with the value of every credential of the environment replaced by its name, in the
    forms it takes once serialised (as is, and JSON-escaped)."""
    return _redact(text, _forms(env))


def redact_obj(obj: Any, env: Mapping[str, str] | None = None) -> Any:
    """redact() on every string of a JSON-like object, before it is serialised; the environment is
    read once per object, not once per string (a report reads thousands of records)."""
    forms = _forms(env)

    def walk(o: Any) -> Any:
        if isinstance(o, str):
            return _redact(o, forms)
        if isinstance(o, dict):
            return {k: walk(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [walk(v) for v in o]
        return o

    return walk(obj)
