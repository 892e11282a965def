#!/bin/bash
# Container HEALTHCHECK: GET /healthz on the relay's own http.addr port, answered 200 within the
# HEALTHCHECK timeout. Uses bash's /dev/tcp so the runtime image needs no curl or wget (smaller
# image, nothing extra to patch); the relay speaks plain HTTP/1.1 on that port.
#
# The port is that of CALLRELAY_HTTP_ADDR (default 7700); the check connects to 127.0.0.1, so an
# http.addr bound to 0.0.0.0 or 127.0.0.1 both work.
set -eu
addr=${CALLRELAY_HTTP_ADDR:-127.0.0.1:7700}
port=${addr##*:}
exec 3<>"/dev/tcp/127.0.0.1/${port}"
printf 'GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' >&3
IFS= read -r status <&3
exec 3<&-
case "$status" in
  "HTTP/1."?" 200 "*) exit 0 ;;
  *) echo "healthz answered: ${status:-nothing}" >&2; exit 1 ;;
esac
