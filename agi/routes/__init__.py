"""The route table: the path in agi://host:port/<path> -> its route.

One route per module, each an `async def route(session, args)`. Listed
here explicitly; nothing registers itself by being imported.
"""

from agi.routes import hotline, hotline_end, keypad_result

ROUTES = {
    "hotline": hotline.route,
    "hotline-end": hotline_end.route,
    "keypad-result": keypad_result.route,
}
