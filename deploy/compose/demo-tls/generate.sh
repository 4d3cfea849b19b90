#!/bin/sh
# Makes the compose demo's TLS files: a CA (ca.pem; its key is thrown
# away) and a certificate for the host name "server" signed by it
# (server.pem, server-key.pem), ECDSA P-256, valid 10 years.
#
# The files committed next to this script are DEMO ONLY: their private keys
# are public, so anyone can impersonate a server using them. Run this
# script to make your own before the demo carries anything you care about:
#
#   cd deploy/compose/demo-tls && ./generate.sh
#
# (or better, drop [server.tls]/ca and pin the server's self-signed
# fingerprint: docs/deploy.md).
set -eu
cd "$(dirname "$0")"
days=3650
banner="# DEMO ONLY: published with its private key in the warren repository; never use it for anything real (regenerate: deploy/compose/demo-tls/generate.sh)."

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

openssl ecparam -name prime256v1 -genkey -noout -out "$tmp/ca.key"
openssl req -x509 -new -key "$tmp/ca.key" -sha256 -days "$days" \
  -subj "/CN=warren compose demo CA (DEMO ONLY)" \
  -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -out "$tmp/ca.crt"

openssl ecparam -name prime256v1 -genkey -noout -out "$tmp/server.key"
openssl req -new -key "$tmp/server.key" -subj "/CN=server (DEMO ONLY)" -out "$tmp/server.csr"
cat >"$tmp/server.ext" <<'EXT'
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=DNS:server
EXT
openssl x509 -req -in "$tmp/server.csr" -CA "$tmp/ca.crt" -CAkey "$tmp/ca.key" \
  -CAcreateserial -sha256 -days "$days" -extfile "$tmp/server.ext" -out "$tmp/server.crt"

# A PKCS#8 key; the banner line before each PEM block is ignored by readers.
openssl pkcs8 -topk8 -nocrypt -in "$tmp/server.key" -out "$tmp/server.p8"
for f in ca.crt:ca.pem server.crt:server.pem server.p8:server-key.pem; do
  { echo "$banner"; cat "$tmp/${f%%:*}"; } >"${f##*:}"
done
# The server runs as an unprivileged user in its container: it must be
# able to read its key through the read-only bind mount.
chmod 644 ca.pem server.pem server-key.pem
echo "wrote ca.pem server.pem server-key.pem"
