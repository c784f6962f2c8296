"""The SMS gateway daemon: sends the outbox (sms_messages, direction 'out')
to an SMSC and files what the SMSC delivers (replies, delivery receipts).

- transport.py: the `Transport` interface a gateway protocol implements,
  and `SmppTransport`, SMPP 3.4 through smpplib;
- encoding.py: UCS-2 text, long messages split with a concatenation UDH;
- gateway.py: the outbox loop (claim, throttle, submit, retry, recover) and
  the inbox (deliveries and receipts into the database).
"""
