#!/usr/bin/env bash
# A virtual serial pair for manual runs, with a hex dump of everything that crosses it.
# (The test suite does not need this: it opens its own pseudo-terminal pairs.)
#
#   tools/virtual-serial-pair.sh [AGENT_END] [TERMINAL_END]
#
# Then set `[serial] device = "/tmp/ttyAGENT"` for the agent and run
#   pos-agent simulate-terminal --device /tmp/ttyTERMINAL
# Frames and ACK/NAK bytes are printed in hex on stderr ('>' one way, '<' the other).
set -euo pipefail
agent_end=${1:-/tmp/ttyAGENT}
terminal_end=${2:-/tmp/ttyTERMINAL}
command -v socat >/dev/null || { echo "socat is not installed (apt-get install socat)" >&2; exit 69; }
echo "agent end: $agent_end   terminal end: $terminal_end   (Ctrl-C to stop)" >&2
exec socat -d -d -x -v \
    "pty,raw,echo=0,link=$agent_end" \
    "pty,raw,echo=0,link=$terminal_end"
