"""Which environment variables carry secrets, defined once, and how they are kept from paper.

A secret is passed to the ranks by a mechanism that writes nothing down: the process environment
(local), ssh's standard input (torchrun: bench/launchers/remote.py exports it on the far side),
Slurm's own propagation of the submitting shell's environment (sbatch --export). It never goes
into a job script, an argv, a log stackbench writes, a record, a report or an image. Records name
the secrets a run was given; each rank records a short hash of each value, which proves the rank
saw it without saying what it is.
"""

from __future__ import annotations

import hashlib
import os
import re
from typing import Mapping

# Names that hold credentials: the tokens our users' stacks read by name (Hugging Face, wandb,
# ModelScope, cloud SDKs), then the suffixes and words every other credential is spelled with.
SECRET_NAME = re.compile(
    r"^(HF_TOKEN|HUGGING_FACE_HUB_TOKEN|HUGGINGFACE_TOKEN|WANDB_API_KEY|MODELSCOPE_API_TOKEN|COMET_API_KEY|"
    r"NEPTUNE_API_TOKEN|MLFLOW_TRACKING_PASSWORD|GOOGLE_APPLICATION_CREDENTIALS)$"
    r"|^(AWS|AZURE|ALIBABA_CLOUD|OSS|TENCENTCLOUD|GCP|GCLOUD)_"
    r"|(_TOKEN|_KEY|_SECRET|_APIKEY|_PAT)$|SECRET|PASSWORD|PASSWD|CREDENTIAL|PRIVATE_KEY|ACCESS_KEY",
    re.I)

# A value that carries a password whatever its name: a URL with user:password@ (proxies, registries).
SECRET_VALUE = re.compile(r"://[^/\s:@]+:[^/\s@]+@")

# Values shorter than this are not searched for in text (a "1" would redact every digit).
MIN_REDACT_LEN = 6


def is_secret(name: str, value: str = "") -> bool:
    return bool(SECRET_NAME.search(name) or (value and SECRET_VALUE.search(value)))


def split(env: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """(plain, secret): what may be written into a script or a command, and what may not."""
    plain, secret = {}, {}
    for k, v in env.items():
        (secret if is_secret(k, v) else plain)[k] = v
    return plain, secret


def present(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The secrets of an environment (this process's by default)."""
    return split(os.environ if env is None else env)[1]


def fingerprint(value: str) -> str:
    """A short hash of a value: equal values give equal hashes, the value cannot be read back."""
    return "sha256:" + hashlib.sha256(value.encode()).hexdigest()[:12]


def fingerprints(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """{name: hash} of the secrets a process sees (what a rank records)."""
    return {k: fingerprint(v) for k, v in sorted(present(env).items())}


def redact(text: str, env: Mapping[str, str] | None = None) -> str:
    """Text with the value of every secret of the environment replaced by its name: the last
    guard for what stackbench writes (records, job scripts), whatever the text came from (a
    log tail in an error message, an argument a user typed)."""
    for name, value in sorted(present(env).items(), key=lambda kv: -len(kv[1])):
        if len(value) >= MIN_REDACT_LEN and value in text:
            text = text.replace(value, f"<{name}: redacted>")
    return text
