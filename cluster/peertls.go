package cluster

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"slices"

	"github.com/warren-tunnel/warren/transport"
)

// PeerTLS returns the TLS configuration of peer links, for both ends:
// TLS 1.3 only, each end presents a certificate, and each verifies the
// other's against the cluster CA (c.CA), the pinned fingerprints
// (c.PeerFingerprints), or both when both are set. This server's
// certificate is c.Cert and c.Key, else own (the server's TLS
// certificate, as `warren fingerprint` shows it; pinned by the others).
func (c *Config) PeerTLS(own []tls.Certificate) (*tls.Config, error) {
	certs := own
	if c.Cert != "" || c.Key != "" {
		cert, err := tls.LoadX509KeyPair(c.Cert, c.Key)
		if err != nil {
			return nil, fmt.Errorf("server.cluster.cert: %w", err)
		}
		certs = []tls.Certificate{cert}
	}
	if len(certs) == 0 {
		return nil, errors.New("server.cluster.cert: peers need a certificate: set cert and key, or keep the server's TLS on")
	}
	var pool *x509.CertPool
	if c.CA != "" {
		pem, err := os.ReadFile(c.CA)
		if err != nil {
			return nil, fmt.Errorf("server.cluster.ca: %w", err)
		}
		pool = x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("server.cluster.ca: %s holds no PEM certificate", c.CA)
		}
	}
	pins := make([][32]byte, len(c.PeerFingerprints))
	for i, f := range c.PeerFingerprints {
		p, err := transport.ParseFingerprint(f)
		if err != nil {
			return nil, fmt.Errorf("server.cluster.peer_fingerprints[%d]: %w", i, err)
		}
		pins[i] = p
	}
	if pool == nil && len(pins) == 0 {
		return nil, errors.New("server.cluster.ca: peers verify each other with a cluster CA or peer_fingerprints")
	}
	verify := func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return fmt.Errorf("%w: the peer sent no certificate", ErrPeerAuth)
		}
		leaf := cs.PeerCertificates[0]
		if pool != nil {
			inter := x509.NewCertPool()
			for _, ic := range cs.PeerCertificates[1:] {
				inter.AddCert(ic)
			}
			// Any usage: a cluster certificate serves both ends.
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
				return fmt.Errorf("%w: certificate not from the cluster CA: %w", ErrPeerAuth, err)
			}
		}
		if len(pins) > 0 && !slices.Contains(pins, sha256.Sum256(leaf.Raw)) {
			return fmt.Errorf("%w: certificate %s is not in peer_fingerprints", ErrPeerAuth, transport.Fingerprint(leaf.Raw))
		}
		return nil
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: certs,
		NextProtos:   []string{PeerALPN},
		// Verification is VerifyConnection's, on both ends: the CA and
		// the pins, not host names (peers are known by ID).
		InsecureSkipVerify: true,
		ClientAuth:         tls.RequireAnyClientCert,
		VerifyConnection:   verify,
	}, nil
}
