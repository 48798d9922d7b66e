# shellcheck shell=bash
# Blue-green: the colour that served keeps running its release after a switch, so that a
# rollback to it is a switch of the proxy and starts nothing. It costs its limits a second time.
# Sourced by lib/release.sh, never run.

# after_switch COLOUR: COLOUR served until the switch that just happened.
after_switch() {
	log "${APP_SERVICE[$1]} keeps running its release for a rollback that starts nothing"
}
