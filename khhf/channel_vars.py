"""Names of the channel variables the dialplan, AGI and AMI bridge share.

One place, so a rename cannot leave the dialplan and the Python apart; the
dialplan files in asterisk/ use the same literal names.
"""

CALL_ID = "KHHF_CALL_ID"            # calls.id of the call row
TASK_ID = "KHHF_TASK_ID"            # tasks.id, empty for calls without a task
UNIFIED_NUMBER = "KHHF_UNIFIED_NUMBER"  # the county's 11-digit unified number
REC_FILE = "KHHF_REC_FILE"          # recording path relative to KHHF_REC_DIR
