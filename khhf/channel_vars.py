"""Names of the channel variables the dialplan, AGI and AMI bridge share.

One place, so a rename cannot leave the dialplan and the Python apart; the
dialplan files in asterisk/ use the same literal names.
"""

CALL_ID = "KHHF_CALL_ID"            # calls.id of the call row
TASK_ID = "KHHF_TASK_ID"            # tasks.id, empty for calls without a task
UNIFIED_NUMBER = "KHHF_UNIFIED_NUMBER"  # the county's 11-digit unified number
REC_FILE = "KHHF_REC_FILE"          # recording path relative to KHHF_REC_DIR

# The hotline (asterisk/extensions.d/10-from-trunk.conf, agi/routes/hotline.py).
# KHHF_ROUTE is set last by the routing AGI: empty means the AGI service was
# down, slow or failed, and the dialplan rings the degraded group.
ROUTE = "KHHF_ROUTE"                # 'manager' or 'group'
DESK = "KHHF_DESK"                  # owning manager's desk extension, or empty
MOBILE = "KHHF_MOBILE"              # owning manager's mobile (11 digits), or empty
GROUP = "KHHF_GROUP"                # Dial string of the fallback group, owner excluded
GROUP_STRATEGY = "KHHF_GROUP_STRATEGY"  # 'ringall' or 'hunt'
COUNTY_DESKS = "KHHF_COUNTY_DESKS"  # Dial string of all on-duty desks (kept in AstDB)
STAGE = "KHHF_STAGE"                # dialplan: routing|desk|mobile|group|message
CUSTOMER_ID = "KHHF_CUSTOMER_ID"    # customers.id of the caller, or empty (unknown)
MANAGER_ID = "KHHF_MANAGER_ID"      # managers.id the route chose, or empty (the group only)

# The carrier trunk's PJSIP endpoint, as the dialplan dials it
# (PJSIP/<number>@<endpoint>, rendered as {{TRUNK}}) and the AMI bridge
# tells the customer's leg by (PJSIP/<endpoint>-...). The trunk is
# identified by its source address only (identify_by = ip), so knowing
# this name gains nobody anything.
TRUNK_ENDPOINT = "carrier"

# The keypad result on the manager's leg after the customer hung up first
# (asterisk/extensions.d/30-outbound.conf, agi/routes/keypad_result.py).
# KHHF_KP_ACTION is set last by the AGI: empty means it failed, and the
# dialplan says so and hangs up.
KEYPAD_ACTION = "KHHF_KP_ACTION"    # 'read' (play, then read digits) or 'say' (play, end)
KEYPAD_PROMPT = "KHHF_KP_PROMPT"    # the sound files to play, full paths joined by '&'
KEYPAD_DIGITS = "KHHF_KP_DIGITS"    # how many digits the next Read takes
KEYPAD_STATE = "KHHF_KP_STATE"      # where the conversation is, handed back to the AGI
# Set by the AMI bridge on a supervisor's listen-in (extensions.d/40-listen.conf)
LISTEN_MODE = "KHHF_LISTEN_MODE"    # 'listen' (silent) or 'whisper'
