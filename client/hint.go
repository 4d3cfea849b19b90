package client

import (
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/warren-tunnel/warren/transport"
)

// tlsHint adds to a certificate verification failure what to do about it
// when the client verifies the server by the system's CAs only (no pin,
// no CA file): the server most likely uses its self-signed certificate,
// which is meant to be pinned. Other errors come back as they are.
func tlsHint(err error, cfg transport.ClientTLS) error {
	if err == nil || len(cfg.Pins()) > 0 || cfg.CA != "" || cfg.InsecureSkipVerify || cfg.Disabled {
		return err
	}
	var uerr x509.UnknownAuthorityError
	var herr x509.HostnameError
	if !errors.As(err, &uerr) && !errors.As(err, &herr) {
		return err
	}
	return fmt.Errorf("%w; if the server uses its self-signed certificate, pin it: --fingerprint sha256:… ([client.tls] fingerprint in a config file) as the server logged it at start, or as \"warren fingerprint\" prints it on the server", err)
}
