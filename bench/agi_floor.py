"""The floor of FastAGI routing: a FastAGI server that does nothing else.

    python3 -m bench.agi_floor PORT

bench/hotline.py runs it beside the real service and routes a copy of the
hotline's dialplan through it. For every request it reads the agi_*
environment, answers at once with the same variables KHHF's hotline route
sets for a customer of manager 1 (desk 8001 in bench/hotline.py's seed),
in one `EXEC MSet` sent as the last command with our side shut (as
agi/server.py does), reads Asterisk's reply and closes: no database, no
directory, no key check, no deadline. Any other route (the h extension's
hotline-end) is read and closed. What this route adds over a static Dial
is what any FastAGI routing adds on the host: the floor.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sys

# what KHHF's route answers for manager 1's customers in bench/hotline.py's
# seed (managers 1-5 on duty, ringall); KHHF_REC_FILE and KHHF_CUSTOMER_ID
# follow the call, as there
ANSWER = ("KHHF_CALL_ID=,KHHF_CUSTOMER_ID={customer},KHHF_MANAGER_ID=1,KHHF_REC_FILE={rec},"
          "KHHF_DESK=8001,KHHF_MOBILE=13700000001,"
          "KHHF_GROUP=PJSIP/8002&PJSIP/8003&PJSIP/8004&PJSIP/8005,KHHF_GROUP_STRATEGY=ringall,"
          "KHHF_COUNTY_DESKS=PJSIP/8001&PJSIP/8002&PJSIP/8003&PJSIP/8004&PJSIP/8005,"
          "KHHF_ROUTE=manager")


def answer(env: dict[str, str]) -> bytes:
    """The one command for a hotline request, from its environment."""
    caller = env.get("agi_callerid", "")
    customer = int(caller[3:]) + 1 if caller.isdigit() and len(caller) == 11 else ""
    day = dt.date.today().strftime("%Y/%m/%d")
    rec = f"{day}/in-{env.get('agi_uniqueid', '')}.wav"
    return f"EXEC MSet {ANSWER.format(customer=customer, rec=rec)}\n".encode()


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        raw = await reader.readuntil(b"\n\n")
        env = dict(line.partition(": ")[::2] for line in raw.decode().splitlines() if line)
        if env.get("agi_network_script", "").endswith("/hotline"):
            writer.write(answer(env))
            writer.write_eof()
            await writer.drain()
            await reader.readline()
    except (OSError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def serve(port: int) -> None:
    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=256)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1])))
