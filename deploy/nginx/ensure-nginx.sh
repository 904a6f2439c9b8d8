#!/usr/bin/env bash
# Prints the path of the nginx binary, installing Debian's nginx first when there is none (as root). The tests of
# the gateway behind a TLS-terminating proxy run it; nothing is started here, and the install starts no service.
set -euo pipefail
log() { echo "ensure-nginx.sh: $*" >&2; }

found() { command -v nginx 2>/dev/null || { [[ -x /usr/sbin/nginx ]] && echo /usr/sbin/nginx; }; }

if path=$(found); then
  echo "$path"
  exit 0
fi
[[ $EUID -eq 0 ]] || { log "nginx not found; run: sudo apt-get install -y nginx"; exit 1; }
log "nginx not installed: apt-get install -y nginx"
# Debian starts a package's service on install unless policy-rc.d says no: nothing may listen on port 80 here.
policy=/usr/sbin/policy-rc.d
placed=""
if [[ ! -e $policy ]]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && placed=yes
fi
trap 'if [[ -n $placed ]]; then rm -f "$policy"; fi' EXIT
export DEBIAN_FRONTEND=noninteractive
if ! { apt-get install -y -qq --no-install-recommends nginx || { apt-get update -qq &&
  apt-get install -y -qq --no-install-recommends nginx; }; } >&2; then
  log "apt-get could not install nginx"
  exit 1
fi
found || { log "nginx installed but not found"; exit 1; }
