#!/bin/sh
# Start as root only long enough to give the mounted state folders to the gateway user (Docker
# creates missing bind-mount folders as root), then run the command as that user.
set -e
RUN_AS="${RUN_AS:-gateway}"
if [ "$(id -u)" = "0" ]; then
    for dir in ${STATE_DIRS:-/app/data /app/logs}; do
        mkdir -p "$dir"
        chown -R "$RUN_AS:$RUN_AS" "$dir"
    done
    exec setpriv --reuid="$RUN_AS" --regid="$RUN_AS" --init-groups "$@"
fi
exec "$@"
