"""What a user sets for the Slurm launcher (`--partition`, `--account`, `--sbatch-arg` ...), with its
defaults, checked when it is made; and the rules its values obey in a job script: a Slurm name is
letters, digits and `_.+-`, an `#SBATCH` word is as is or double-quoted (sbatch's own parser), a
control character is refused (a newline would end the directive and start a script line)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from stackbench.core.errors import ConfigError

# a Slurm name (partition, account; comma lists of them)
SLURM_NAME = re.compile(r"[\w.+-]+(,[\w.+-]+)*")
# a value sbatch's #SBATCH parser reads as one word without quotes
BARE = re.compile(r"[\w@%+=:,./-]+")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def directive(arg: str, where: str = "--sbatch-arg") -> str:
    """One #SBATCH word: as is, or double-quoted with \\ and \" escaped (sbatch's own parser);
    a control character is refused (a newline would end the directive and start a script line)."""
    if CONTROL.search(arg):
        raise ConfigError(f"{arg!r} holds a newline or another control character", where=where,
                          fix="give the value on one line, without control characters")
    return arg if BARE.fullmatch(arg) else '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class SlurmSettings:
    """The Slurm launcher's own settings (bench's --partition, --account, --exclusive, --sbatch-arg,
    --slurm-gpus, --container-image); refused when made if a value cannot be written safely."""

    partition: str = ""
    account: str = ""
    exclusive: bool = False
    """whole nodes"""
    sbatch_args: tuple[str, ...] = ()
    """extra sbatch options, one per item (--qos=high)"""
    gpus: str = "auto"
    """ask for --gpus-per-node: auto (if the cluster advertises gpu GRES), yes, no"""
    container_image: str = ""
    """run each node's command in this image (pyxis/enroot srun --container-image)"""
    poll_s: float = 1.0
    """seconds between two looks at a job (squeue)"""
    ask_cluster: bool = True
    """ask sinfo (GPUs, memory); --script-only / --dry-run ask only where a client answers, so they work on
    a laptop with no Slurm client"""

    def __post_init__(self) -> None:
        object.__setattr__(self, "sbatch_args", tuple(self.sbatch_args))
        if self.gpus not in ("auto", "yes", "no"):
            raise ConfigError(f"--slurm-gpus {self.gpus!r}", where="--slurm-gpus", fix="use auto, yes or no")
        for flag, value in (("--partition", self.partition), ("--account", self.account)):
            if value and not SLURM_NAME.fullmatch(value):
                raise ConfigError(f"{value!r} is not a Slurm {flag[2:]} name", where=flag,
                                  fix="letters, digits, '_', '.', '+', '-' (a comma list for several)")
        for arg in self.sbatch_args:
            directive(arg)
            if not arg.startswith("-"):
                raise ConfigError(f"{arg!r} is not an sbatch option", where="--sbatch-arg",
                                  fix="give one option per flag, e.g. --sbatch-arg=--qos=high")
            if arg.split("=", 1)[0] in ("--export", "--export-file"):
                raise ConfigError(f"{arg!r}: stackbench submits with --export=ALL (how settings and secrets reach "
                                  "the ranks without being written into the script)", where="--sbatch-arg",
                                  fix="set variables with --env KEY=VALUE, or export them in this shell")
        directive(self.container_image, "--container-image")
