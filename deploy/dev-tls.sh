# Sourced by kafka.sh and postgres.sh: a certificate authority made for one throwaway
# cluster, and a server certificate it signed for 127.0.0.1 and localhost.
#
#   dev_tls DIR NAME "CA NAME"   writes DIR/ca.pem (share it with clients), DIR/ca.key,
#                                DIR/NAME.crt and DIR/NAME.key (0600; the server's)
#
# Each step is chained with && (set -e does not act inside a function called as
# `dev_tls ... || die`), so the status says whether every file was made.
dev_tls() {
  local dir=$1 name=$2 ca_name=$3
  command -v openssl >/dev/null || {
    printf '%s\n' "error: openssl is needed for the TLS certificates (apt-get install -y openssl)" >&2
    return 1
  }
  mkdir -p "$dir" && (
    cd "$dir" &&
      openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 3650 \
        -subj "/CN=$ca_name" 2>/dev/null &&
      openssl req -newkey rsa:2048 -nodes -keyout "$name.key" -out "$name.csr" -subj "/CN=localhost" 2>/dev/null &&
      printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost" "basicConstraints=CA:FALSE" \
        "extendedKeyUsage=serverAuth" >"$name.ext" &&
      openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -out "$name.crt" -days 3650 \
        -extfile "$name.ext" 2>/dev/null &&
      rm -f "$name.csr" "$name.ext" ca.srl &&
      chmod 600 ca.key "$name.key" &&
      chmod 644 ca.pem "$name.crt"
  )
}

# dev_tls_client DIR NAME CN   a client certificate for CN, signed by DIR's CA (made by dev_tls):
#                              DIR/NAME.crt and DIR/NAME.key (0644: for the tests that present it)
dev_tls_client() {
  local dir=$1 name=$2 cn=$3
  (
    cd "$dir" &&
      openssl req -newkey rsa:2048 -nodes -keyout "$name.key" -out "$name.csr" -subj "/CN=$cn" 2>/dev/null &&
      printf '%s\n' "basicConstraints=CA:FALSE" "extendedKeyUsage=clientAuth" >"$name.ext" &&
      openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -out "$name.crt" -days 3650 \
        -extfile "$name.ext" 2>/dev/null &&
      rm -f "$name.csr" "$name.ext" ca.srl &&
      chmod 644 "$name.crt" "$name.key"
  )
}
