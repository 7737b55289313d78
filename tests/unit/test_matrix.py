"""bench/matrix.py: the sweep's run configs, impossible combinations left out with the reason."""

import pytest

from stackbench.bench.matrix import expand
from stackbench.core.config import RunConfig
from stackbench.core.errors import ConfigError


def test_expand_leaves_out_impossible_combinations_with_the_reason():
    configs, invalid = expand(task=["sft", "dpo"], zero_stage=[0, 2, 3], offload=["none", "optimizer+params"],
                              nodes=[1, 2])
    assert len(configs) == 2 * 2 * (3 + 1)
    assert len(invalid) == 2 * 2 * 2 and all("needs ZeRO-3" in why for _, why in invalid)
    assert expand(zero_stage=[2, 2, 3])[0] == [RunConfig(zero_stage=2), RunConfig(zero_stage=3)]  # twice runs once
    # a typo stops the sweep, never "left out"
    with pytest.raises(ConfigError, match="--offload 'optimiser' is not a valid value"):
        expand(offload=["none", "optimiser"])
