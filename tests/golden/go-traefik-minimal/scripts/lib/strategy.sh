# shellcheck shell=bash
# Rolling: once the proxy routes to the new colour, the colour that served finishes the requests
# it has and stops; its replica count becomes 0. A rollback starts the earlier release again.
# Sourced by lib/release.sh, never run.

# after_switch COLOUR: COLOUR served until the switch that just happened.
after_switch() {
	retire_colour "$1"
}
