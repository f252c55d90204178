"""The strict base of every scenario section, and the bounded numbers sections share.

Here, not in ``sim`` or ``models``, because both sides define sections of the one scenario schema: the
learning side its tokens, models and training, the wireless side its MAC and traffic.
"""

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
    """Base of every scenario section: unknown keys are errors, and so are NaN and infinite numbers."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


# Any SNR a link budget gives lies inside it (23 dBm over one PRB at 1 m from the antenna is about
# 98 dB; -100 dB is no link at all); a value outside is a typo.
SNR_DB_RANGE = (-100.0, 100.0)
SnrDb = Annotated[float, Field(ge=SNR_DB_RANGE[0], le=SNR_DB_RANGE[1])]
SEED_LIMIT = 2**32  # 0 <= seed < 2**32; streams derived from a seed add offsets up to 2**33, far below 2**64
Seed = Annotated[int, Field(ge=0, lt=SEED_LIMIT)]
