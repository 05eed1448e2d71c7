#!/bin/sh
# run.sh VHOSTMTA: every benchmark of the project, one after the other.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
sh "$here/map.sh" "$1"
echo
sh "$here/smtp.sh" "$1"
echo
sh "$here/fleet.sh" "$1"
