"""agi://.../keypad-result,<call id>,<prompts dir>,<state>,<digits>: one turn
of the keypad result conversation on the manager's leg, after the customer
hung up first (khhf-keypad-result in asterisk/extensions.d/30-outbound.conf).

The service (khhf.services.keypad) decides; this route hands the dialplan
what to play (full paths under the prompts directory the dialplan passes,
KHHF_SOUNDS), how many digits to read and the state to hand back, with the
action variable last, so a failure leaves it empty and the dialplan says
the keypad is unavailable.
"""

from __future__ import annotations

import functools
import re

from agi.routes.hotline_end import _int
from khhf import channel_vars as cv
from khhf.services import keypad

# an absolute directory, nothing that could climb out of it or break MSet
_PROMPTS_DIR = re.compile(r"(/[A-Za-z0-9_.-]+)+")


async def route(session, args):
    args = list(args) + [""] * (4 - len(args))
    call_id, prompts_dir, state, digits = args[:4]
    if not _PROMPTS_DIR.fullmatch(prompts_dir) or "/../" in f"{prompts_dir}/":
        raise ValueError(f"keypad-result: not a prompts directory: {prompts_dir[:80]!r}")
    turn = await session.unit_of_work(functools.partial(
        keypad.step, call_id=_int(call_id), state=state, digits=digits,
        settings=session.settings))
    await session.set_variables({
        cv.KEYPAD_PROMPT: "&".join(f"{prompts_dir}/{name}" for name in turn.prompts),
        cv.KEYPAD_DIGITS: turn.max_digits,
        cv.KEYPAD_STATE: turn.state,
        cv.KEYPAD_ACTION: turn.action,
    })
