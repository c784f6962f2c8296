"""PBX process control: build the Asterisk root, render the config we ship
(asterisk/), start and stop instances. It is given the desk phones to render
(khhf.services.accounts.active_desk_extensions); it does not query the
database. The AMI client it asks "booted?" is amiclient."""
