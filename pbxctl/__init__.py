"""PBX process control: build the Asterisk root, render the config we ship
(asterisk/), start and stop instances, and the AMI client they share."""
